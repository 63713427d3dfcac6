"""Inference: the Python API (`load`, `ReportGenerator`, `ReportResult`), readable evidence, the HTTP service
(`leadrrg.inference.serve`) and its web page (`page/`). Nothing here imports the trainer except to load a run."""

from leadrrg.inference.api import ReportGenerator, ReportResult, load

__all__ = ["ReportGenerator", "ReportResult", "load"]
