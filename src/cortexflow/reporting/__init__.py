"""Reporting: figures, tables and HTML reports."""

from cortexflow.reporting.figures import bar_chart, reconstruction_grid, save_image

__all__ = ["bar_chart", "reconstruction_grid", "save_image"]
