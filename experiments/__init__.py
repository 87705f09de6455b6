"""One file per experiment: `get_config()` returns its config; the module docstring's first line describes it."""
