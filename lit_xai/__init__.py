"""lit_xai: a PyTorch Lightning training-and-evaluation framework for feature attribution."""

__version__ = "0.1.0"
