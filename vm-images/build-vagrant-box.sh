#!/bin/bash
# Build the pyksm Debian 12 Vagrant box (libvirt provider) and `vagrant box add` it.
#
#   vm-images/build-vagrant-box.sh [--force]
#
# Stages, each cached under $PYKSM_CACHE/vagrant (default ~/.cache/pyksm/vagrant):
#   rootfs  debootstrap bookworm (minbase) + systemd, openssh-server, sudo, python3,
#           python3-bpfcc, qemu-system-x86 ... from the Debian mirror this machine's
#           apt sources use (no other network); keyed by the package list
#   image   user `vagrant` (Vagrant's insecure key, replaced at the first `vagrant up`),
#           systemd-networkd DHCP, sshd, debugfs; an ext4 filesystem on the whole disk
#           (no partition table, no boot loader: the Vagrantfile boots the pyksm kernel
#           directly with root=/dev/vda), converted to qcow2; metadata.json for libvirt
#   add     `vagrant box add --force` as $BOX_NAME when the image changed
# Re-running with nothing changed only compares two stamps. Needs root (debootstrap,
# chroot) and: debootstrap e2fsprogs qemu-utils vagrant (make vagrant-setup).
set -euo pipefail

BOX_NAME=${PYKSM_VAGRANT_BOX:-pyksm/debian12}
SUITE=bookworm
DISK_GB=${PYKSM_VAGRANT_DISK_GB:-16}
CACHE=${PYKSM_CACHE:-$HOME/.cache/pyksm}/vagrant
HERE=$(cd "$(dirname "$0")" && pwd)
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

# Installed in the box. python3-* besides bcc: what pyksm imports inside the VM (its
# dependencies come from Debian, pip never runs there: the VM has no internet); xz-utils
# for bcc, which unpacks the kernel headers from /sys/kernel/kheaders.tar.xz.
PACKAGES=(
	systemd systemd-sysv udev dbus libpam-systemd openssh-server sudo rsync
	iproute2 kmod procps less netbase ca-certificates
	python3 python3-bpfcc bpfcc-tools python3-rich python3-numpy python3-pyelftools
	python3-xxhash qemu-system-x86 qemu-utils busybox-static xxhash xz-utils
)

log() { printf '\033[1m[box]\033[0m %s\n' "$*" >&2; }
die() {
	printf 'build-vagrant-box: error: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot)"
for tool in debootstrap mkfs.ext4 qemu-img vagrant; do
	command -v "$tool" >/dev/null || die "$tool missing; fix: make vagrant-setup"
done

# The Debian mirror of this machine's apt sources (deb822 .sources or one-line .list).
mirror() {
	python3 - "$SUITE" <<'EOF'
import glob, re, sys
suite = sys.argv[1]
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            f = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if suite in f.get("Suites", "").split() and "main" in f.get("Components", "").split():
                print(f["URIs"].split()[0]); sys.exit(0)
    else:
        for line in text.splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line.strip())
            if m and m.group(2) == suite and "main" in m.group(3).split():
                print(m.group(1)); sys.exit(0)
sys.exit(1)
EOF
}
# Vagrant's well-known insecure key (Debian's package, or HashiCorp's /opt/vagrant).
VAGRANT_PUBKEY=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
	/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n1) ||
	true
[[ -f $VAGRANT_PUBKEY ]] || die "Vagrant's insecure public key (keys/vagrant.pub) not found"
MIRROR=${PYKSM_VAGRANT_MIRROR:-$(mirror)} || die "no '$SUITE main' entry in /etc/apt/sources.list(.d)"

mkdir -p "$CACHE/debs"
pkg_key=$(printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-12)
img_key=$( (cat "$0" && find "$HERE/vagrant-box" -type f | sort | xargs cat) | sha256sum | cut -c1-12)-$pkg_key
ROOTFS=$CACHE/rootfs-$pkg_key
BOX=$CACHE/box-$img_key
t_start=$SECONDS

cleanup_mounts() {
	for m in dev/pts dev proc sys; do
		mountpoint -q "$ROOTFS.tmp/$m" 2>/dev/null && umount -l "$ROOTFS.tmp/$m"
	done
	return 0
}
trap cleanup_mounts EXIT

# --- stage rootfs -------------------------------------------------------------
if [[ $FORCE == 1 || ! -f $ROOTFS/.pyksm-rootfs-done ]]; then
	log "rootfs: debootstrap $SUITE from $MIRROR (cache $CACHE/debs)"
	rm -rf "$ROOTFS.tmp"
	debootstrap --variant=minbase --cache-dir="$CACHE/debs" \
		--include=apt-utils,gnupg "$SUITE" "$ROOTFS.tmp" "$MIRROR" >&2
	mount -t proc proc "$ROOTFS.tmp/proc"
	mount -t sysfs sys "$ROOTFS.tmp/sys"
	mount --bind /dev "$ROOTFS.tmp/dev"
	mount --bind /dev/pts "$ROOTFS.tmp/dev/pts"
	printf '#!/bin/sh\nexit 101\n' >"$ROOTFS.tmp/usr/sbin/policy-rc.d"
	chmod +x "$ROOTFS.tmp/usr/sbin/policy-rc.d"
	log "rootfs: apt-get install ${#PACKAGES[@]} packages (and their dependencies)"
	# Downloads land in the shared cache so a rebuild does not fetch them again.
	mkdir -p "$ROOTFS.tmp/var/cache/apt/archives"
	mount --bind "$CACHE/debs" "$ROOTFS.tmp/var/cache/apt/archives"
	chroot "$ROOTFS.tmp" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
		sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES[*]}" >&2
	umount "$ROOTFS.tmp/var/cache/apt/archives"
	chroot "$ROOTFS.tmp" apt-get clean
	rm -f "$ROOTFS.tmp/usr/sbin/policy-rc.d"
	cleanup_mounts
	touch "$ROOTFS.tmp/.pyksm-rootfs-done"
	rm -rf "$ROOTFS"
	mv "$ROOTFS.tmp" "$ROOTFS"
	log "rootfs: done in $((SECONDS - t_start)) s"
else
	log "rootfs: cached $ROOTFS"
fi

# --- stage image --------------------------------------------------------------
if [[ $FORCE == 1 || ! -f $BOX/pyksm-debian12.box ]]; then
	t0=$SECONDS
	work=$BOX.tmp
	rm -rf "$work" && mkdir -p "$work"
	log "image: configure a copy of the rootfs"
	cp -a "$ROOTFS" "$work/root"
	R=$work/root
	rm -f "$R/.pyksm-rootfs-done"
	cp -a "$HERE/vagrant-box/overlay/." "$R/"
	echo pyksm >"$R/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 pyksm\n' >"$R/etc/hosts"
	printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$R/etc/fstab"
	printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$R/etc/apt/sources.list"
	: >"$R/etc/machine-id" # a fresh id at each VM's first boot
	rm -f "$R"/etc/ssh/ssh_host_*
	chroot "$R" sh -ec '
		useradd -m -s /bin/bash -G sudo vagrant
		echo vagrant:vagrant | chpasswd
		passwd -l root
		systemctl enable systemd-networkd ssh ssh-hostkeys.service
		systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service
	'
	install -d -m 700 -o 1000 -g 1000 "$R/home/vagrant/.ssh"
	install -m 600 -o 1000 -g 1000 "$VAGRANT_PUBKEY" "$R/home/vagrant/.ssh/authorized_keys"
	chmod 0440 "$R/etc/sudoers.d/vagrant"
	chown -R 1000:1000 "$R/home/vagrant"
	log "image: ext4 filesystem (${DISK_GB} GiB virtual) and qcow2"
	truncate -s "${DISK_GB}G" "$work/root.img"
	mkfs.ext4 -q -L pyksm-root -d "$R" "$work/root.img"
	qemu-img convert -O qcow2 "$work/root.img" "$work/box.img"
	rm -rf "$R" "$work/root.img"
	cat >"$work/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $DISK_GB}
EOF
	cp "$HERE/vagrant-box/Vagrantfile.box" "$work/Vagrantfile"
	echo "$img_key" >"$work/pyksm-box-key"
	# Uncompressed: the qcow2 holds no zero blocks, gzip would only cost minutes.
	tar -C "$work" -cf "$work/pyksm-debian12.box" metadata.json Vagrantfile pyksm-box-key box.img
	rm -f "$work/box.img"
	rm -rf "$BOX"
	mv "$work" "$BOX"
	# keep one image and one rootfs: older ones are ~800 MB each
	find "$CACHE" -maxdepth 1 \( -name 'box-*' -o -name 'rootfs-*' \) \
		! -name "${BOX##*/}" ! -name "${ROOTFS##*/}" -exec rm -rf {} +
	log "image: done in $((SECONDS - t0)) s → $BOX/pyksm-debian12.box"
else
	log "image: cached $BOX/pyksm-debian12.box"
fi

# --- stage add ----------------------------------------------------------------
stamp=$CACHE/added-box-key
if [[ $FORCE == 1 || $(cat "$stamp" 2>/dev/null) != "$img_key" ]] ||
	! vagrant box list 2>/dev/null | grep -q "^$BOX_NAME "; then
	t0=$SECONDS
	log "add: vagrant box add --force --name $BOX_NAME"
	vagrant box add --force --name "$BOX_NAME" "$BOX/pyksm-debian12.box" >&2
	# vagrant-libvirt keeps the box's disk in libvirt's pool under a name that does not
	# change with the box; `pyksm vagrant up` compares this stamp with the uploaded one.
	echo "$img_key" >"$stamp"
	log "add: done in $((SECONDS - t0)) s"
else
	log "add: $BOX_NAME is current (key $img_key)"
fi
log "box $BOX_NAME ready in $((SECONDS - t_start)) s"
