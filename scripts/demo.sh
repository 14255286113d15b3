#!/bin/bash
# The README's main command (`make demo`): a real ssh login into an ephemeral
# root. It builds a small image, makes a btrfs store on a loop file, starts a
# demo sshd on 127.0.0.1 whose PAM stack uses pam_loginchroot.so, logs in,
# and shows what happens inside and what is left after logout. Every claim it
# prints is checked; the demo exits non-zero if one does not hold.
# Everything it creates is removed at the end (the users are kept).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "make demo needs root" >&2; exit 1; }

top=$(cd "$(dirname "$0")/.." && pwd)
cli=$top/.build/release/loginchroot
module=$top/.build/release/pam_loginchroot.so
demo=/var/lib/loginchroot-demo
conf=$demo/etc/loginchroot.conf
service=sshd-loginchroot-demo
user=lcdemo
other=lcdemo2
sshd_pid=""
failures=0

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
check() { # check DESCRIPTION COMMAND...
    if "${@:2}"; then echo "  ok    $1"; else echo "  FAIL  $1"; failures=$((failures + 1)); fi
}
lc() { "$cli" "$@" --config "$conf"; }

cleanup() {
    [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
    [ -f "$conf" ] && "$cli" gc --config "$conf" >/dev/null 2>&1 || true
    umount -l "$demo/run/pins" 2>/dev/null || true
    umount -l "$demo/store" 2>/dev/null || true
    rm -f "/etc/pam.d/$service" /tmp/lcdemo-*
    rm -rf "$demo"
    [ -n "${syslogd_pid:-}" ] && kill "$syslogd_pid" 2>/dev/null && rm -f /dev/log
    true
}
trap cleanup EXIT
cleanup

say "1. A golden image and a btrfs store on a loop file"
mkdir -p "$demo/etc"
sh "$top/scripts/make-image.sh" "$demo/image" >/dev/null
cat > "$conf" <<EOF
[store]
backend = btrfs
path = $demo/store
image = $demo/store.img
image_size = 768M
root_size = 256M

[session]
state_dir = $demo/run
EOF
lc init --from-dir "$demo/image" | grep -v '^ ' || true
lc status

say "2. Users and a demo sshd on 127.0.0.1 whose PAM stack has pam_loginchroot.so"
for u in $user $other; do id "$u" >/dev/null 2>&1 || useradd -m -s /bin/sh "$u"; done
if [ ! -e /dev/log ]; then busybox syslogd -n -O "$demo/syslog" & syslogd_pid=$!; sleep 0.3; fi
cat > "/etc/pam.d/$service" <<EOF
auth     required pam_permit.so
account  required pam_permit.so
session  required $module config=$conf
EOF
ssh-keygen -q -t ed25519 -N '' -f "$demo/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$demo/user_key"
for u in $user $other; do cp "$demo/user_key.pub" "$demo/authorized_keys.$u"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$demo/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $demo/host_key
UsePAM yes
PidFile $demo/sshd.pid
AuthorizedKeysFile $demo/authorized_keys.%u
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF
chmod 755 "$demo"
mkdir -p /run/sshd
ln -s /usr/sbin/sshd "$demo/$service"   # sshd's PAM service is its program name
"$demo/$service" -D -e -f "$demo/sshd_config" 2>"$demo/sshd.log" & sshd_pid=$!
for _ in $(seq 50); do ssh-keyscan -p "$port" 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.1; done
echo "sshd listening on 127.0.0.1:$port (PAM service $service)"
login() { # login USER COMMAND
    ssh -i "$demo/user_key" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o LogLevel=ERROR "$1@127.0.0.1" "$2"
}

say "3. $user logs in over ssh and works in the root"
login $user 'echo "  inside: $(cat /etc/loginchroot-image), root id $(head -n1 /run/loginchroot-session), cwd $(pwd)"
echo "a note on the root filesystem" > /srv/scratch/note
echo "scratch" > /tmp/lcdemo-tmp; echo "kept" > $HOME/lcdemo-home
nohup sleep 4001 >/dev/null 2>&1 </dev/null &
setsid sleep 4002 >/dev/null 2>&1 </dev/null &
( sleep 4003 >/dev/null 2>&1 </dev/null & ) &
echo "  wrote /srv/scratch/note, /tmp/lcdemo-tmp, ~/lcdemo-home; left nohup, setsid and double-forked sleeps"
while [ ! -e /tmp/lcdemo-release ]; do sleep 0.1; done' &
first=$!
for _ in $(seq 100); do [ -e "$demo/store/sessions/$user/srv/scratch/note" ] && break; sleep 0.1; done

say "4. While that session is open"
echo "  a second login of $user: $(login $user 'cat /srv/scratch/note 2>/dev/null || echo "(no note)"')"
echo "  a login of $other:      $(login $other 'cat /srv/scratch/note 2>/dev/null || echo "(no note)"')"
lc sessions | sed 's/^/  /'
check "the second login of $user saw the first one's note" \
    test "$(login $user 'cat /srv/scratch/note')" = "a note on the root filesystem"
check "$other did not see it" test "$(login $other 'cat /srv/scratch/note 2>/dev/null || echo none')" = none
check "the note is not on the host's /srv" test ! -e /srv/scratch/note
check "the note never reached master or the image" \
    test -z "$(find "$demo/store/master" "$demo/store/stable" -name note 2>/dev/null)"

say "5. $user logs out"
touch /tmp/lcdemo-release
wait $first
# sshd closes the PAM session right after the client has its exit status.
for _ in $(seq 100); do [ -z "$(ls -A "$demo/run/roots")" ] && ! pgrep -u $user >/dev/null && break; sleep 0.1; done
check "/tmp/lcdemo-tmp stayed on the host" test -e /tmp/lcdemo-tmp
check "~$user/lcdemo-home stayed on the host" test -e "$(getent passwd $user | cut -d: -f6)/lcdemo-home"
check "the root, and the note in it, are gone" test ! -e "$demo/store/sessions/$user"
check "no process of $user survived (nohup, setsid, double fork)" sh -c "! pgrep -u $user >/dev/null"
check "no state record or namespace pin is left" test -z "$(ls -A "$demo/run/roots")$(ls -A "$demo/run/pins")"
check "no session mount is left" sh -c "! grep -q '$demo/store/sessions\|$demo/run/staging' /proc/self/mountinfo"
check "no session cgroup is left" test -z "$(find /sys/fs/cgroup -name 'loginchroot-*' 2>/dev/null)"
rm -f "$(getent passwd $user | cut -d: -f6)/lcdemo-home" /tmp/lcdemo-tmp /tmp/lcdemo-release
lc status | sed 's/^/  /'
if [ -n "${syslogd_pid:-}" ]; then
    say "What the module logged (syslog, authpriv)"
    grep pam_loginchroot "$demo/syslog" | sed 's/^/  /' || true
fi

say "Done: $failures failed check(s)"
[ "$failures" = 0 ]
