"""Exceptions raised by fastrec."""

__all__ = ["NotFittedError", "ModelFormatError"]


class NotFittedError(ValueError, AttributeError):
    """A model method that needs fitted factors was called before ``fit``."""


class ModelFormatError(ValueError):
    """A model file is truncated, corrupted, foreign, or of an unsupported version."""
