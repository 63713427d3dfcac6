"""One module per data layout; each turns a data root into a `records.ReadResult` (all splits, both report
sections, labels where the data has them). `leadrrg.data.manifests` dispatches to them by `DataConfig.format`."""
