"""Inference from a trained run: the Python API (`api`: `load`, `ReportGenerator`, `ReportResult`), decoding
(`decoding`, `beam`, `steps`, `expert_bias`), readable evidence (`evidence`), a split as prediction records
(`predict`), resumable and sharded batch generation (`batch`, `shards`, `studies`, `inputs`). Nothing here imports
the trainer; a run directory is read by `leadrrg.runs.files`. The service is `leadrrg.serve`."""
