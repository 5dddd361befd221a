#!/usr/bin/env bash
# Check the KSM++ series the way a maintainer would before sending it:
# every patch passes scripts/checkpatch.pl --strict, and after every patch
# the files it touches build with W=1 and no warning (KSM_HINTS=y and its
# KUnit tests on from the patch that adds them; the whole series also with
# KSM_HINTS=n).
#
# Usage: kernel-patches/check-series.sh [WORKDIR]
#   WORKDIR (default ~/.cache/pyksm/series-check) gets a git tree of Debian's
#   linux-source-6.12 and an object tree configured like the test kernel
#   (pyksm kernel build must have run once, for its .config).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$HOME/.cache/pyksm/series-check}
tarball=$(ls /usr/src/linux-source-6.12.tar.* 2>/dev/null | head -n1)
config=$HOME/.cache/pyksm/obj/patched-test/.config
[ -n "$tarball" ] || { echo "check-series: no /usr/src/linux-source-6.12.tar.* (make setup)" >&2; exit 2; }
[ -f "$config" ] || { echo "check-series: no $config (run: pyksm kernel build)" >&2; exit 2; }

tree=$work/linux
obj=$work/obj
mkdir -p "$work"
if [ ! -d "$tree/.git" ]; then
	echo "unpacking $tarball into $tree"
	rm -rf "$tree" && mkdir -p "$tree"
	tar -xf "$tarball" -C "$tree" --strip-components=1
	git -C "$tree" init -q
	git -C "$tree" add -f -A .
	git -C "$tree" -c user.name=pyksm -c user.email=pyksm@localhost commit -qm base
	git -C "$tree" tag base
fi
git -C "$tree" reset -q --hard base
git -C "$tree" clean -qfdx

mkdir -p "$obj"
cp "$config" "$obj/.config"
make -s -C "$tree" O="$obj" ARCH=x86_64 olddefconfig
make -s -C "$tree" O="$obj" ARCH=x86_64 -j"$(nproc)" prepare >/dev/null

objects_of() { # the .o files a patch's .c and .h changes can break
	local files
	files=$(git -C "$tree" show --name-only --format= HEAD)
	for f in $files; do
		case $f in
		mm/*.h | include/* | arch/*) echo mm/ksm.o mm/ksm_hints.o mm/madvise.o ;;
		mm/*.c) [ -f "$tree/$f" ] && echo "${f%.c}.o" ;;
		esac
	done | tr ' ' '\n' | sort -u | while read -r o; do
		[ -f "$tree/${o%.o}.c" ] && echo "$o"
	done
}

# olddefconfig on the base tree dropped the series' options (they did not
# exist yet) and they default to n: turn them on again after every patch
# that may have added them, so each patch is built with its code enabled.
enable_hints() {
	"$tree/scripts/config" --file "$obj/.config" -e KSM_HINTS -e KSM_HINTS_KUNIT_TEST
	make -s -C "$tree" O="$obj" ARCH=x86_64 olddefconfig
	if grep -q '^config KSM_HINTS$' "$tree/mm/Kconfig" &&
		! grep -q '^CONFIG_KSM_HINTS=y' "$obj/.config"; then
		echo "check-series: CONFIG_KSM_HINTS did not stay enabled" >&2
		exit 2
	fi
}

status=0
printf '%-62s %-10s %s\n' patch checkpatch build
while read -r p <&3; do
	case $p in '' | \#*) continue ;; esac
	# Debian's python3 first: checkpatch's SPDX check runs scripts/spdxcheck.py,
	# which needs python3-ply and python3-git; a crash of it is a failure too.
	# The tree is Debian's tarball, without upstream history: checkpatch
	# cannot look up the commit a Fixes: tag names (UNKNOWN_COMMIT_ID), so
	# that one check is left to the reviewer.
	cp_out=$(PATH=/usr/bin:$PATH "$tree/scripts/checkpatch.pl" --strict -q \
		--ignore UNKNOWN_COMMIT_ID "$here/$p" 2>&1 |
		grep -E '^total:|Traceback|Error' || true)
	[ -z "$cp_out" ] && cp_res=clean || { cp_res=dirty; status=1; }
	git -C "$tree" am -q "$here/$p"
	enable_hints
	objs=$(objects_of)
	log=$work/build-${p%.patch}.log
	if [ -z "$objs" ]; then
		b_res="(no C)"
	elif make -C "$tree" O="$obj" ARCH=x86_64 -j"$(nproc)" W=1 $objs >"$log" 2>&1 &&
		! grep -q 'warning:' "$log"; then
		b_res="ok"
	else
		b_res="FAILED ($log)"
		status=1
	fi
	printf '%-62s %-10s %s\n' "$p" "$cp_res" "$b_res"
done 3<"$here/series" </dev/null

# The whole series with CONFIG_KSM_HINTS=n must still build.
"$tree/scripts/config" --file "$obj/.config" -d KSM_HINTS -d KSM_HINTS_KUNIT_TEST
make -s -C "$tree" O="$obj" ARCH=x86_64 olddefconfig
if make -C "$tree" O="$obj" ARCH=x86_64 -j"$(nproc)" W=1 mm/ksm.o mm/madvise.o >"$work/build-nohints.log" 2>&1 &&
	! grep -q 'warning:' "$work/build-nohints.log"; then
	echo "whole series, KSM_HINTS=n: ok"
else
	echo "whole series, KSM_HINTS=n: FAILED ($work/build-nohints.log)"
	status=1
fi
exit $status
