"""ferjax: a fast, correct, reproducible JAX/Flax trainer for facial expression recognition."""

__version__ = "0.1.0"
