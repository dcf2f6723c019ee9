"""A command-line client of the public API: `python -m qwentts_cli --help` (see docs/local.md)."""
