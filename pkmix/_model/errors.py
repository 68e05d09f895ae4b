"""Errors raised when a model is defined or bound to data."""


class ModelError(ValueError):
    """A model definition problem; the message names the parameter at fault."""
