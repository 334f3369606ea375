"""The ``attnbench`` command line; `main` is the console script."""

from harness.cli.main import main

__all__ = ["main"]
