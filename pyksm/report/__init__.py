"""Merge reports: metrics per mode, plots over time, one self-contained HTML."""
