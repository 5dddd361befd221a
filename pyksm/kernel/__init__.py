"""Talking to the kernel: KSM's sysfs knobs and counters, per-process KSM
state, and the KSM++ hint interface (debugfs ``ksm/hints_raw``)."""
