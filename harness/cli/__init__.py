"""The ``attnbench`` command line; `main` is the console script."""

from attnbench.cli.main import main

__all__ = ["main"]
