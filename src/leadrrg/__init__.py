"""leadrrg: chest X-ray report generation with LEAD (Layer-wise Expert-aligned Decoding)."""

__version__ = "0.1.0"
