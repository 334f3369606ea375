"""Built-in attention variants, one module per family.

Each registers through the ``attnbench.variants`` entry point group in this
project's pyproject.toml, exactly as a third-party plugin would, and imports
only the public variant API of `harness`. Code that two families share lives
in a private module beside them (`_tanh_scorer`: additive and luong-concat),
never in one variant's module imported by another.
"""
