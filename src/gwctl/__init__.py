"""gwctl: administer an LLM gateway from one TOML file, and run it."""

__version__ = "0.1.0"
