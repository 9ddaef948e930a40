"""curator: a traceable corpus builder for medical vision-language models."""

__version__ = "0.2.0"
