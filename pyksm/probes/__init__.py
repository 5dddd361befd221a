"""eBPF probes (C in bpf/) loaded by bcc: what the running kernel offers, and
which read paths of the targets are traced."""
