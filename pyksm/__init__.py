"""pyksm: KSM++ made real.

The data's way through the package:

    probes (bpf/) -> collect -> control -> kernel -> lab -> analysis -> report

``pyksm.lab`` builds and boots the patched Linux 6.12 test kernel;
``pyksm.kernel`` speaks to KSM's sysfs and the hint interface.
"""

__version__ = "0.1.0"
