"""fetchml: run ML experiments on the GPU machines a team already owns."""

__version__ = "0.1.0"
