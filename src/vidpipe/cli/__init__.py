"""The ``vidpipe`` command."""

from vidpipe.cli.app import app, main

__all__ = ["app", "main"]
