"""The `crossvis` command: a thin face over the Python API."""
