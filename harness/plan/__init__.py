"""What to run: TOML suites parsed, validated and expanded into cases."""
