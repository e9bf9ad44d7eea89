"""bridge: an HTTP-to-TCP line bridge daemon on Twisted and Klein."""

__version__ = "0.1.0"
