"""The ``vaeinv`` command: ``vaeinv --help`` lists the commands."""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
