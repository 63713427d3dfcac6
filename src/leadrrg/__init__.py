"""leadrrg: chest X-ray report generation with LEAD (Layer-wise Expert-aligned Decoding).

    import leadrrg
    generator = leadrrg.load("runs/demo/lead")
    print(generator.generate("frontal.png").report)

Research use only; not for clinical use.
"""

__version__ = "0.1.0"


def load(run_dir, device="auto", seed=0, overrides=()):
    """Load a trained run for inference -> `leadrrg.inference.ReportGenerator` (see `leadrrg.inference.api`);
    `overrides`, e.g. ["model.decoder.pretrained_path=DIR"] for a base model that has moved."""
    from leadrrg.inference.api import load as _load

    return _load(run_dir, device=device, seed=seed, overrides=overrides)


__all__ = ["__version__", "load"]
