"""Faust agents, the pure lifecycle rules and the worker's composition root."""

__version__ = "0.1.0"
