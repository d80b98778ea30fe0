"""mtpeft: one parameter-efficient module on a frozen code model, trained on several code-analysis tasks at once."""

__version__ = "0.1.0"
