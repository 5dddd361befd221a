#!/bin/bash
# Runs as root inside the pyksm Vagrant VM at `vagrant up` (and `vagrant provision`).
# Installs the synced checkout (/vagrant) as pyksm without pip: the VM has no internet
# and the box already holds pyksm's runtime dependencies from Debian. Then checks that
# the kernel is the pyksm one, that KSM and debugfs are ready, and prints a summary.
set -euo pipefail
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
mkdir -p "$site"
echo /vagrant >"$site/pyksm-vagrant.pth"
cat >/usr/local/bin/pyksm <<'SH'
#!/bin/sh
exec python3 -m pyksm.cli "$@"
SH
chmod 755 /usr/local/bin/pyksm
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
[[ -d /sys/kernel/mm/ksm ]] || {
	echo "pyksm-provision: /sys/kernel/mm/ksm missing: kernel $(uname -r) has no KSM" >&2
	exit 1
}
version=$(pyksm --version)
hint=absent
[[ -e /sys/kernel/mm/ksm/hint_capacity ]] && hint=$(cat /sys/kernel/mm/ksm/hint_capacity)
echo "pyksm-provision: kernel $(uname -r); ksm run=$(cat /sys/kernel/mm/ksm/run)" \
	"hint_capacity=$hint; debugfs mounted; $version"
