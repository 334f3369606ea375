"""Built-in suite definitions (TOML), found by name: ``attnbench run quick``."""
