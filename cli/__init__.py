"""The Typer command-line layer: parses, validates and prints; the work is done by metaprune."""
