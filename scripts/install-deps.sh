#!/bin/sh
# Installs what building, the demo and the tests need on a fresh Debian 12.
# The VM lab (the dm-thin tier) needs Debian's kernel, qemu, kmod (the guest loads
# its modules by hand), udev (one test runs udevd in there) and virtme-ng;
# dmsetup is for the tests' own checks (loginchroot itself never runs it).
# `make deb` builds with debhelper; the package tier checks it with lintian
# (and readelf, systemd-analyze) and installs it into a Debian 12 made by
# mmdebstrap; the full-system tier boots one from a qemu-img overlay.
# selinux-policy-dev builds the package's SELinux policy module; ostree and
# gnupg are what fleet delivery drives (publish --export); the fleet tests make
# a network namespace with iproute2.
# `install-deps.sh bench` adds the benchmark's anchors: schroot and LVM.
set -eu
packages="libpam0g-dev libdevmapper-dev libselinux1-dev pamtester openssh-server openssh-client
          btrfs-progs erofs-utils busybox-static util-linux login passwd procps gcc libc6-dev libstdc++-12-dev make e2fsprogs dmsetup
          linux-image-amd64 qemu-system-x86 kmod udev
          debhelper fakeroot lintian mmdebstrap qemu-utils systemd binutils selinux-policy-dev semodule-utils
          ostree gnupg iproute2"
[ "${1:-}" != bench ] || packages="$packages schroot lvm2 thin-provisioning-tools"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
python3 -c 'import pytest, pexpect, pyflakes' 2>/dev/null || python3 -m pip install -q pytest pexpect pyflakes
python3 -c 'import virtme_ng' 2>/dev/null || python3 -m pip install -q virtme-ng==1.42
