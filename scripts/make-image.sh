#!/bin/sh
# Builds a small root filesystem (busybox-static + passwd/group) in DIR, for
# the demo and the tests. Usage: make-image.sh DIR [APPLET...]
# With APPLETs, only those get links (the VM lab copies images under
# emulation, where every file costs).
set -eu
dir=$1
shift
busybox=$(command -v busybox)
mkdir -p "$dir"
chmod 755 "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc root proc sys dev tmp var/tmp home run/user srv/scratch
# srv/scratch is writable by everyone and NOT bound from the host: what a
# user writes there lives in the session's snapshot only.
chmod 1777 tmp var/tmp srv/scratch
ln -s ../run var/run  # as in Debian: utmp is /var/run/utmp
cp "$busybox" bin/busybox
for applet in ${*:-$(./bin/busybox --list)}; do
    [ -e "bin/$applet" ] || ln -s busybox "bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > etc/passwd
printf 'root:x:0:\n' > etc/group
printf 'loginchroot image\n' > etc/issue
echo "golden image built $(date -u +%Y-%m-%dT%H:%M:%SZ)" > etc/loginchroot-image
