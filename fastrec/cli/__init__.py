"""The ``fastrec`` command: parses arguments, calls the library, formats output."""
from .commands import main

__all__ = ["main"]
