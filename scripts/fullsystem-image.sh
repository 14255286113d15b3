#!/bin/bash
# The full-system lab's machine: a Debian 12 system disk built from Debian's
# archive with mmdebstrap, that boots with systemd as PID 1 (systemd, logind,
# D-Bus, openssh-server, a getty on the serial console).
#
#   scripts/fullsystem-image.sh DIR [selinux]
#
# DIR gets system.img (a raw ext4 disk) and id_ed25519 (root's ssh key; lcfs1 and lcfs2 are test users, with the
# same key and the password "lcfs"). The disk carries /root/golden.tar, a
# smaller Debian 12 for `loginchroot init --from-tar`, built once beside DIR
# for both variants (fullsystem-golden-HASH.tar, named by its package list).
# The kernel is the VM lab's (Debian's,
# in /boot); its modules are copied onto the disk. A second run reuses
# what DIR holds; nothing there is needed (a fresh DIR builds it all,
# about 3 minutes).
#
# With "selinux" the disk also has Debian's SELinux policy (the default
# refpolicy) and auditd, and is labelled when it is built (setfiles on the
# finished tree; mke2fs -d keeps the labels). It boots with SELinux only when
# the kernel command line says security=selinux. The policy's unit that
# marks a relabel after a boot without SELinux is masked: the disk is
# labelled once, here.
set -euo pipefail
dir=$1
variant=${2:-}
mkdir -p "$dir"
# One build of DIR at a time: `make test` starts both early, in the
# background, and the tests' own call waits here for it, then finds it done.
exec 9> "$dir/.build.lock"
flock 9
kernel=$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)
release=${kernel#/boot/vmlinuz-}
golden_packages=procps,iproute2,dbus,dbus-user-session,systemd
# What the graphical sessions run inside a root: Xsession (x11-common), the
# terminal it falls back to, an X server a user session starts itself
# (Xvfb), weston's headless compositor and a Wayland client, xdotool.
golden_packages+=,x11-common,xterm,xauth,xvfb,xdotool,weston,wayland-utils
packages=systemd-sysv,systemd,dbus,libpam-systemd,polkitd,openssh-server,openssh-client,sudo,cron,procps,kmod,udev,iproute2
packages+=,btrfs-progs,e2fsprogs,libdevmapper1.02.1,dmsetup,debootstrap,python3,less,psmisc
# The fleet test: ostree and gpg for `publish --export` and `update --pull`.
packages+=,ostree,gnupg
# The display managers the desktop tests log in through, and the X server
# lightdm starts on the host (the dummy video driver: the VM has no display),
# xdotool for root to type into a session on it. lightdm needs a greeter
# package; the tests use its own autologin and no greeter of it.
packages+=,greetd,lightdm,lightdm-autologin-greeter,xserver-xorg-core,xserver-xorg-video-dummy,xdotool
labelling=()
if [ "$variant" = selinux ]; then
    packages+=,selinux-basics,selinux-policy-default,auditd
    labelling=(--customize-hook='chroot "$1" systemctl mask selinux-autorelabel-mark.service'
               --customize-hook='chroot "$1" setfiles -F -e /proc -e /sys -e /dev -e /run -c /etc/selinux/default/policy/policy.33 /etc/selinux/default/contexts/files/file_contexts /')
fi
# What was built from what: a change of either list or of the kernel builds again.
recipe="$release $golden_packages $packages $(sha256sum "$0" | cut -c1-16)"
[ -f "$dir/system.img" ] && [ "$(cat "$dir/recipe" 2>/dev/null)" = "$recipe" ] && exit 0
rm -f "$dir/system.img" "$dir/recipe"

[ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C loginchroot-fullsystem -f "$dir/id_ed25519"

# The image users log into: minbase plus what the tests run there.
golden=$(dirname "$dir")/fullsystem-golden-$(printf %s "$golden_packages" | sha256sum | cut -c1-16).tar
if [ ! -f "$golden" ]; then
    mmdebstrap --quiet --variant=minbase --include="$golden_packages" bookworm "${golden%.tar}.partial.tar"
    mv "${golden%.tar}.partial.tar" "$golden"
fi

root=$(mktemp -d /var/tmp/lcfullsystem.XXXXXX)
trap 'rm -rf "$root"' EXIT
key=$(cat "$dir/id_ed25519.pub")
mmdebstrap --quiet --variant=minbase --include="$packages" \
    --customize-hook='echo lcfull > "$1/etc/hostname"' \
    --customize-hook='printf "127.0.0.1 localhost\n127.0.1.1 lcfull\n" > "$1/etc/hosts"' \
    --customize-hook='printf "/dev/vda / ext4 defaults 0 1\n" > "$1/etc/fstab"' \
    --customize-hook='printf "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/80-lab.network"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd ssh' \
    --customize-hook='chroot "$1" systemctl disable greetd lightdm && rm -f "$1/etc/systemd/system/display-manager.service"' \
    --customize-hook='chroot "$1" systemctl set-default multi-user.target' \
    --customize-hook='mkdir -p "$1/etc/X11/xorg.conf.d" && printf "Section \"Device\"\n    Identifier \"dummy\"\n    Driver \"dummy\"\nEndSection\n" > "$1/etc/X11/xorg.conf.d/10-dummy.conf"' \
    --customize-hook='chroot "$1" passwd -d root >/dev/null' \
    --customize-hook="mkdir -p -m 700 \"\$1/root/.ssh\" && echo '$key' > \"\$1/root/.ssh/authorized_keys\"" \
    --customize-hook='for user in lcfs1 lcfs2; do chroot "$1" useradd -m -s /bin/bash $user && echo "$user:lcfs" | chroot "$1" chpasswd; done' \
    --customize-hook="for user in lcfs1 lcfs2; do mkdir -p -m 700 \"\$1/home/\$user/.ssh\" && echo '$key' > \"\$1/home/\$user/.ssh/authorized_keys\" && chroot \"\$1\" chown -R \$user: /home/\$user/.ssh; done" \
    --customize-hook="mkdir -p \"\$1/lib/modules\" && cp -a /lib/modules/$release \"\$1/lib/modules/\" && cp $golden \"\$1/root/golden.tar\"" \
    "${labelling[@]}" \
    bookworm "$root"
rm -f "$dir/system.partial.img"
mke2fs -q -t ext4 -L lcfull -d "$root" "$dir/system.partial.img" 6G
mv "$dir/system.partial.img" "$dir/system.img"
echo "$release" > "$dir/kernel"
echo "$recipe" > "$dir/recipe"
