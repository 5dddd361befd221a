"""Experiments: QEMU-like guest workloads, KSM vs KSM++ runs with 1 s
sampling and an exact oracle, stored as a tidy results dataset."""
