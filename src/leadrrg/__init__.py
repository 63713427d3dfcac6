"""leadrrg: chest X-ray report generation with LEAD (Layer-wise Expert-aligned Decoding).

    import leadrrg
    generator = leadrrg.load("runs/demo/lead")
    print(generator.generate("frontal.png").report)

Research use only; not for clinical use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    """`leadrrg.load` is `leadrrg.inference.api.load` (load a trained run for inference -> a `ReportGenerator`),
    imported on first use so that `import leadrrg` and `leadrrg --help` do not import torch."""
    if name == "load":
        from leadrrg.inference.api import load

        return load
    raise AttributeError(f"module 'leadrrg' has no attribute {name!r}")
