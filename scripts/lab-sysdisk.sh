#!/bin/bash
# Builds the VM lab's system disk: an ext4 image holding copies of the files
# the lab's tests run (programs, their libraries, PAM modules, Python and
# pytest, loginchroot's release build and the debug build the crash tests
# use, with the Swift runtime it loads), at their own paths.
#
#   scripts/lab-sysdisk.sh IMAGE
#
# Why: the guest sees this machine's files over 9p without caching, so under
# emulation every process start re-reads its libraries through qemu
# (measured: `loginchroot --help` 4.7 s from 9p, 1.8 s from this disk; the
# lab tier went from 25 to 16 minutes). scripts/vmlab.sh lays this disk
# read-only over those directories; anything not on it still comes from 9p,
# only slower.
set -euo pipefail
cd "$(dirname "$0")/.."
image=$1

programs="sh bash dash env cat echo sleep nohup setsid unshare id ls grep pwd test [ dd head wc timeout rm
          mkdir rmdir true false find pkill kill ps useradd userdel groupadd nsenter taskset setpriv runuser su
          login mount umount losetup dmsetup mkfs.ext4 mke2fs tar stat chmod chown ln mv cp touch readlink
          pamtester sshd ssh ssh-keygen ssh-keyscan busybox sort uniq tail tr cut"
python=$(python3 -c 'import sys; print(sys.executable)')
pyprefix=$(python3 -c 'import sys; print(sys.base_prefix)')
pyver=$(python3 -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
site=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')

files=()
for p in $programs; do
    path=$(command -v "$p" || true)
    case $path in /*) files+=("$path") ;; esac
done
files+=("$python" "$PWD/.build/release/loginchroot" "$PWD/.build/release/pam_loginchroot.so")
files+=("$PWD/.build/debug/loginchroot" "$PWD/.build/debug/libloginchroot_pam.so")
files+=(/usr/lib/systemd/systemd-udevd)  # vmlab.sh hides the host's /usr/lib/systemd; one test starts udevd
files+=(/usr/lib/x86_64-linux-gnu/security/*.so)
# Every shared library those load (ldd lists the whole closure).
mapfile -t libs < <(for f in "${files[@]}"; do
    { ldd "$f" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u)
files+=("${libs[@]}")

mnt=$(mktemp -d)
rm -f "$image"
truncate -s 2G "$image"
mkfs.ext4 -q -F -O ^has_journal "$image"
mount -o loop "$image" "$mnt"
trap 'umount "$mnt"; rmdir "$mnt"' EXIT
copy() {  # PATH... -> the disk, at the path its directories resolve to
    for f in "$@"; do
        [ -e "$f" ] || continue
        real=$(readlink -f "$f")
        # A link's own name too, where it is not the resolved one.
        named=$(readlink -f "$(dirname "$f")")/$(basename "$f")
        for p in "$real" "$named"; do
            [ ! -e "$mnt$p" ] && [ ! -L "$mnt$p" ] || continue
            mkdir -p "$mnt$(dirname "$p")"
            cp -a "$p" "$mnt$p"
        done
    done
}
copy "${files[@]}"
# Python's standard library (no tests) and the few packages pytest needs.
(cd / && tar -cf - --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter --exclude=ensurepip \
    --exclude=site-packages "${pyprefix#/}/lib/$pyver") | tar -xf - -C "$mnt"
for pkg in pytest _pytest pluggy iniconfig packaging pexpect ptyprocess pygments py.py; do
    copy "$site/$pkg"
done
# What the guest does with the copies: layers go over the directory of the
# same path (the guest sees the union), binds replace it (so Python sees only
# these packages, not the host's hundreds).
swift_runtime=$(ldd .build/debug/loginchroot | awk '$1 == "libswiftCore.so" {print $3}')
for dir in /usr "$(dirname "$(readlink -f "$PWD/.build/release/loginchroot")")" \
           "$(dirname "$(readlink -f "$PWD/.build/debug/loginchroot")")" "$(dirname "$swift_runtime")" \
           "$(readlink -f "$pyprefix")"; do
    readlink -f "$dir"
done > "$mnt/layers"
readlink -f "$site" > "$mnt/binds"
du -sh "$mnt" | cut -f1
