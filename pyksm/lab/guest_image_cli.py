"""``pyksm guest-image build`` (registered by pyksm.cli)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.lab import guest_image
from pyksm.terminal import err, escape, out

__all__ = ["register"]


def subdirs(text: str) -> tuple[str, ...]:
    """A comma list of directories inside the disk's source tree."""
    names = tuple(d.strip().strip("/") for d in text.split(",") if d.strip())
    if not names:
        raise PyksmError(f"no directories in {text!r}")
    return names


def cmd_guest_image_build(args: argparse.Namespace) -> int:
    recipe = guest_image.DiskRecipe(
        size_mib=args.size_mib,
        tree=Path(args.tree).resolve() if args.tree else None,
        subdirs=args.subdirs or guest_image.DEFAULT_SUBDIRS,
    )
    image = guest_image.build_all(recipe, err)
    if args.json:
        print(json.dumps(image.as_dict(), indent=2))
        return 0
    d = image.disk
    out.print(f"kernel     {escape(str(image.bzimage))} ({image.kernel_release})")
    out.print(f"initramfs  {escape(str(image.initramfs))}")
    out.print(
        f"disk       {escape(str(d.path))} ({d.size_mib} MiB ext4: {d.files} files, "
        f"{d.file_bytes / (1 << 20):.0f} MiB of {escape(d.source)})"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gp = sub.add_parser(
        "guest-image", help="kernel, initramfs and shared disk of the real-QEMU guests"
    ).add_subparsers(dest="action", required=True)
    b = gp.add_parser(
        "build",
        help="build (or fetch from cache) the guest kernel, the agent's initramfs and an "
        "ext4 disk holding a real file tree",
    )
    b.add_argument(
        "--size-mib",
        type=argtypes.positive_int,
        default=256,
        help="disk size (default 256); files fill about 80 %% of it",
    )
    b.add_argument(
        "--tree",
        type=argtypes.existing_dir,
        help="source of the files (default: Debian's linux-source-6.12, unpacked in the cache)",
    )
    b.add_argument(
        "--subdirs",
        type=argtypes.checked(subdirs),
        help="comma list of the tree's directories, taken in this order "
        f"(default {','.join(guest_image.DEFAULT_SUBDIRS)})",
    )
    b.add_argument("--json", action="store_true", help="print the paths and the disk's manifest")
    b.set_defaults(func=cmd_guest_image_build)
