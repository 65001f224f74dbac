"""facediff: train, sample, compose and evaluate diffusion models that generate faces."""
__version__ = "0.1.0"
