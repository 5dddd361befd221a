# pyksm: every install step lives here (apt-get, venv, pip), so a fresh
# Debian 12 machine needs nothing done by hand.  `make help` lists targets.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYKSM := $(VENV)/bin/pyksm
PYTEST := $(VENV)/bin/pytest
# Debian's python3 so that --system-site-packages sees Debian's bcc
# (python3-bpfcc lives in /usr/lib/python3/dist-packages).
SYSTEM_PYTHON ?= /usr/bin/python3

# Debian packages: kernel source and build tools, QEMU, bcc (+ Debian's 6.1
# headers, for bcc on a host kernel without kheaders), selftest deps, udev
# (virtme-ng's script I/O ports), xxhsum (hash benchmark), busybox (QEMU guests),
# e2fsprogs (the QEMU guests' shared disk: mke2fs -d), python3-ply and python3-git
# (checkpatch's SPDX check, scripts/spdxcheck.py), linux-perf (hints_bench's
# PROFILE_S: perf record of ksmd in the test VM).
APT_PACKAGES := build-essential flex bison bc libelf-dev \
	libssl-dev dwarves cpio xz-utils zstd kmod rsync util-linux \
	qemu-system-x86 python3 python3-venv python3-pip python3-bpfcc \
	bpfcc-tools libnuma-dev udev linux-headers-amd64 xxhash busybox-static \
	e2fsprogs python3-ply python3-git linux-perf

# The kernel source the series targets (kernel-patches/series, "# target:"),
# pinned: Debian's security updates move linux-source-6.12 to newer stable
# releases, and the patches, configs and published numbers are for this one.
# tests/unit/test_patches.py checks that the two agree.
KERNEL_SOURCE_PACKAGE := linux-source-6.12
KERNEL_SOURCE_VERSION := 6.12.117-1~deb12u1

# The Vagrant lab (make vagrant-setup; not needed by make test): Vagrant with the
# libvirt provider, libvirtd (run by pyksm inside its own network namespace),
# dnsmasq for the isolated management network, nc for SSH into the namespace,
# debootstrap/e2fsprogs/qemu-utils to build the box.
VAGRANT_PACKAGES := vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients \
	dnsmasq-base netcat-openbsd iproute2 debootstrap e2fsprogs qemu-utils rsync \
	openssh-client

.PHONY: help setup apt venv lint unit vm vm-debug vm-qemu vm-io-coverage test demo demo-qemu bench kernel guest-image clean \
	vagrant-setup vagrant-box vagrant-up vagrant-test

help:
	@echo "make setup     install Debian packages and the virtual environment (idempotent)"
	@echo "make demo      KSM vs KSM++ on the kernel-build workload, report in ./pyksm-report/"
	@echo "make test      setup, lint, unit tests, VM tests on the test kernel"
	@echo "make vm-debug  VM tests on the debug (KASAN, lockdep, KFENCE) kernel"
	@echo "make vm-qemu   the slow VM tests with real QEMU guests inside the test VM (~10 min)"
	@echo "make vm-io-coverage  guest aio/cache modes x probe layers: coverage of a real guest's reads"
	@echo "make demo-qemu KSM vs KSM++ with two real QEMU guests (nested TCG), report in ./pyksm-report-qemu/"
	@echo "make bench     benchmarks (JSON in bench-results/)"
	@echo "make guest-image  guest kernel, agent initramfs, ext4 disk of the real-QEMU guests"
	@echo "make vagrant-setup  install Vagrant, vagrant-libvirt, libvirt, debootstrap"
	@echo "make vagrant-up     build kernel + box (cached), vagrant up (Debian VM on it)"
	@echo "make vagrant-test   the Vagrant lab end to end (box, up, ssh, run, destroy)"

setup: apt venv

# Only calls apt-get when a package is missing, so a warm machine stays fast.
apt_install = @missing=$$(for p in $(1); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "apt-get install:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

apt:
	$(call apt_install,$(APT_PACKAGES))
	@have=$$(dpkg-query -W -f='$${Status} $${Version}\n' $(KERNEL_SOURCE_PACKAGE) 2>/dev/null); \
	if [ "$$have" != "install ok installed $(KERNEL_SOURCE_VERSION)" ]; then \
		echo "apt-get install: $(KERNEL_SOURCE_PACKAGE)=$(KERNEL_SOURCE_VERSION) (installed: $${have:-none})"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--allow-downgrades $(KERNEL_SOURCE_PACKAGE)=$(KERNEL_SOURCE_VERSION); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check pyksm tests benchmarks
	$(VENV)/bin/ruff format --check pyksm tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	$(PYTEST) -q tests/unit

kernel: setup
	$(PYKSM) kernel build

guest-image: setup
	vm-images/build-qemu-guest.sh

vm: setup
	$(PYKSM) kernel build
	$(PYTEST) -q -m "vm and not vagrant and not nested_qemu" tests/vm

# The slow VM tests with real QEMU guests inside the test VM (nested TCG; a
# guest per I/O mode): ~10 minutes. make vm runs the short two-guest one.
vm-qemu: setup
	$(PYKSM) kernel build
	$(PYTEST) -q -m nested_qemu tests/vm

# Guest I/O modes x probe layers (part of vm-qemu); PYKSM_COVERAGE_JSON=PATH keeps the results.
vm-io-coverage: setup
	$(PYKSM) kernel build
	$(PYTEST) -q -m nested_qemu tests/vm/test_io_coverage.py

vm-debug: setup
	$(PYKSM) kernel build --debug
	PYKSM_TEST_VARIANT=debug $(PYTEST) -q -m "vm and not vagrant and not nested_qemu" tests/vm

test: setup lint unit vm

demo: setup
	$(PYKSM) demo

# KSM vs KSM++ with two real QEMU guests inside the test VM (see README).
demo-qemu: setup
	$(PYKSM) experiment run qemu-kernel-build --modes ksm,ksm++ -o pyksm-results-qemu
	$(PYKSM) report pyksm-results-qemu/qemu-kernel-build -o pyksm-report-qemu

bench: setup
	$(PY) -m benchmarks

vagrant-setup: setup
	$(call apt_install,$(VAGRANT_PACKAGES))

vagrant-box: vagrant-setup
	$(PYKSM) vagrant box

vagrant-up: vagrant-box kernel
	$(PYKSM) vagrant up

vagrant-test: vagrant-setup kernel
	PYKSM_VAGRANT_TEST=1 $(PYTEST) -q -m vagrant tests/vm/test_vagrant.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
