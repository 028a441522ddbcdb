"""The version of nnpot, in one place: pyproject.toml reads it, and every layer imports it from
here (not from the package root, which imports every layer)."""

__version__ = "0.1.0"
