"""Command-line interface (``cortexflow``)."""
