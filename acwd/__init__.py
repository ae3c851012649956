"""acwd: the After Conversation Work daemon."""

__version__ = "0.1.0"
