"""Collect read events from the probes: targets, live mode, hint-trace files."""
