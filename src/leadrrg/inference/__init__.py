"""Inference: the Python API (`load`, `ReportGenerator`, `ReportResult`), readable evidence, decoding, the HTTP
service (`leadrrg.serve.app`) and its web page (`page/`). Nothing here imports the trainer except to load a run.
Names are imported on first use, so that `leadrrg --help` does not pay for torch."""

__all__ = ["ReportGenerator", "ReportResult", "load"]


def __getattr__(name: str):
    if name in __all__:
        from leadrrg.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'leadrrg.inference' has no attribute {name!r}")
