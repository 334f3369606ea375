"""Integrations with other tools: the pytest plugin (``attention_benchmark`` fixture)."""
