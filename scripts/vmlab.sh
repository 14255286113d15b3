#!/bin/bash
# The VM lab: boots Debian's kernel (which has device-mapper; this machine's
# kernel has none) on this machine's own filesystem under qemu with virtme-ng,
# runs a command as root inside, and hands back its output and exit status.
#
#   scripts/vmlab.sh [--keep DIR] [--disk FILE]... [--system-disk IMAGE] -- COMMAND...
#
# Each --disk FILE becomes a virtio disk in the guest (/dev/vda, /dev/vdb, ...
# in order) whose contents persist in FILE across boots. --system-disk takes
# an image from scripts/lab-sysdisk.sh: copies of the programs the command
# runs, laid over the slow shared filesystem (see there).
# The guest sees the host's files read-only, with writable overlays on /etc,
# /var, /tmp, /home and a tmpfs on /var/tmp; only DIR (a fresh directory
# unless --keep names one, for state that must survive a reboot) is written
# through to the host. KVM does not work here, so qemu emulates (TCG): a boot
# takes about a minute. The guest has LC_VMLAB_MEMORY (3G by default), and
# its writable overlays, in RAM, half of it.
set -euo pipefail

keep=""
system_disk=""
disks=()
while [ $# -gt 0 ]; do
    case $1 in
        --keep) keep=$2; shift 2 ;;
        --disk) disks+=(--disk "$2"); shift 2 ;;
        --system-disk) system_disk=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--keep DIR] [--disk FILE]... [--system-disk IMAGE] -- COMMAND..." >&2; exit 2; }
want_disks=$(( ${#disks[@]} / 2 ))
if [ -n "$system_disk" ]; then
    disks+=(--disk "$system_disk")
    letters=(a b c d e f g h)
    system_device=/dev/vd${letters[want_disks]}
    want_disks=$(( want_disks + 1 ))
fi

kernel=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] || { echo "vmlab: no Debian kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 2; }
vng=$(command -v vng || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/vng")
[ -x "$vng" ] || { echo "vmlab: vng not found (pip install virtme-ng)" >&2; exit 2; }

# The guest's /var/tmp is a fresh tmpfs: a working directory there must be
# handed in.
workdir=()
case $PWD/ in /var/tmp/*) workdir=(--rodir "$PWD") ;; esac

shared=${keep:-$(mktemp -d /var/tmp/lclab.XXXXXX)}
mkdir -p "$shared"
rm -f "$shared/rc" "$shared/output" "$shared/rc-before-power-cut"
printf '%q ' "$@" > "$shared/command"
cat > "$shared/guest.sh" <<EOF
#!/bin/sh
# Runs inside the guest.
# No udev in the guest: load by hand what the lab needs.
fail() { echo "vmlab: \$1" > "$shared/output"; echo 2 > "$shared/rc"; exit 2; }
modprobe -a loop dm-thin-pool virtio_blk overlay ext4 erofs || fail "modprobe failed"
for _ in \$(seq 100); do [ "\$(ls /dev/vd? 2>/dev/null | wc -l)" -ge $want_disks ] && break; sleep 0.1; done
if [ -n "${system_device:-}" ]; then
    mkdir -p /run/lcsys
    mount -o ro,noload ${system_device:-} /run/lcsys || fail "cannot mount the system disk"
    while read -r dir; do
        mount -t overlay -o ro,lowerdir=/run/lcsys\$dir:\$dir lcsys \$dir || fail "cannot lay /run/lcsys\$dir over \$dir"
    done < /run/lcsys/layers
    while read -r dir; do
        mount --bind /run/lcsys\$dir \$dir || fail "cannot bind /run/lcsys\$dir"
    done < /run/lcsys/binds
fi
# virtme-ng hides the host's /etc/shadow behind an empty bind; useradd needs
# the real (overlaid, so guest-only) file.
umount /etc/shadow 2>/dev/null || true
# Its /tmp overlay comes up 0755; a real /tmp is 1777.
chmod 1777 /tmp
cd "$PWD"
sh -c "\$(cat "$shared/command")" > "$shared/output" 2>&1
echo \$? > "$shared/rc"
EOF
chmod +x "$shared/guest.sh"

# virtme-ng-init starts udevd when it finds systemd's, and its coldplug never
# settles under emulation; systemd-tmpfiles costs ~20 s. Hide both from the
# guest (in a private mount namespace: the host keeps them).
set +e
timeout "${LC_VMLAB_TIMEOUT:-1800}" unshare --mount --propagation private sh -c '
    for hidden in /usr/lib/systemd /usr/lib/tmpfiles.d; do
        [ ! -d $hidden ] || mount -t tmpfs none $hidden || exit 2
    done
    kernel=$1 shared=$2 vng=$3; shift 3
    exec "$vng" -v -r "$kernel" --disable-kvm --memory "${LC_VMLAB_MEMORY:-3G}" --cpus 2 --rwdir "$shared" "$@" --exec "$shared/guest.sh"' \
    vmlab "$kernel" "$shared" "$vng" "${disks[@]}" "${workdir[@]}" > "$shared/console" 2>&1
vng_status=$?
set -e

# A test may cut the guest's power on purpose (a debug build's power-loss
# step), leaving its result in DIR/rc-before-power-cut.
if [ ! -f "$shared/rc" ] && [ -f "$shared/rc-before-power-cut" ]; then
    echo "vmlab: the guest lost its power, as the last test intended" >> "$shared/output"
    mv "$shared/rc-before-power-cut" "$shared/rc"
fi
if [ ! -f "$shared/rc" ]; then
    echo "vmlab: the guest never finished (vng exit $vng_status); its console:" >&2
    tail -n 40 "$shared/console" >&2
    exit 2
fi
cat "$shared/output"
rc=$(cat "$shared/rc")
[ -n "$keep" ] || rm -rf "$shared"
exit "$rc"
