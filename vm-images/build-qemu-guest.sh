#!/bin/bash
# Build the real-QEMU guests' images: the guest kernel (pyksm kernel build --guest),
# the busybox agent's initramfs (vm-images/qemu-guest/init) and a shared ext4 disk
# holding a real file tree (mke2fs -d; no mount, no root needed). All cached under
# $PYKSM_CACHE (default ~/.cache/pyksm); a second run with nothing changed is quick.
#
#   vm-images/build-qemu-guest.sh [--size-mib 256] [--tree DIR] [--subdirs a,b] [--json]
#
# Only calls the Python builder (pyksm.lab.guest_image); `make guest-image` runs it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PYKSM=${PYKSM:-$HERE/../.venv/bin/pyksm}
[[ -x $PYKSM ]] || PYKSM=pyksm
exec "$PYKSM" guest-image build "$@"
