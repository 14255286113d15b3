"""Graphical logins through real display managers, on the full-system lab
with the package's profile enabled (conftest.py's `installed`): nothing
in /etc/pam.d is edited, greetd and lightdm reach the module through
common-session as Debian ships their PAM files.

- greetd 0.9 with a test greeter that speaks its IPC (greetd_greeter.py)
  and logs in with a password: an X session that runs its own X server
  (Xvfb), xterm and xdotool; a Wayland session (weston's headless backend
  and wayland-info); a crash of greetd in the middle of a session.
- lightdm 1.26 with Xorg and the dummy video driver on the host (the
  image's /etc/X11/xorg.conf.d): autologin into Debian's default X session
  (/etc/X11/Xsession default) while an ssh session of the user is open,
  and into the failsafe session (/etc/X11/Xsession failsafe, which ends in
  x-terminal-emulator).

One display manager runs at a time: both take vt7. The tests run in file
order, before test_fullsystem.py's, on the same boot.
"""
import json
import shlex
import time

import pytest

from lclab import systemlab
from lclab.systemlab import (CONFIG, MARKER, PASSWORD, ROOT_WRITE, host_namespace, record_system,
                             roots_after_logout, wait_for)

GREETER_DIR = "/run/lc-greeter"  # greetd_greeter.py's tickets and log
TYPED = "lc-typed"  # what the session's terminal wrote, in the user's home
LOGOUT = "lc-logout"  # made in the user's home to end a session


def typed_command(stamp, then):
    """What a session's terminal runs: the root marker's uid line and the
    mount namespace of its shell into $HOME, a file into the root's own
    filesystem and one into $HOME; then `then`."""
    return (f"(sed -n 2p {MARKER}; readlink /proc/self/ns/mnt) > ~/{TYPED}.part && mv ~/{TYPED}.part ~/{TYPED}; "
            f"echo {stamp} > {ROOT_WRITE}; echo {stamp} > ~/lc-home-write; {then}")


AWAIT_LOGOUT = f"until [ -e ~/{LOGOUT} ]; do sleep 1; done"


def processes(machine, selector):
    """pid, mount namespace, the root marker's uid line (or "-" on the
    host) and the command of every process `pgrep selector` finds and that
    is still there once read."""
    out = machine.root(f"for pid in $(pgrep {selector}); do "
                       f"printf '%s %s %s %s\\n' $pid $(readlink /proc/$pid/ns/mnt) "
                       f"$(sed -n 2p /proc/$pid/root{MARKER} 2>/dev/null || echo -) "
                       f"\"$(tr '\\0' ' ' < /proc/$pid/cmdline)\"; done", check=False)
    rows = [line.split(" ", 3) for line in out.splitlines()]
    return [row for row in rows if len(row) == 4 and row[3].strip()]  # not one that exited meanwhile


def in_one_root(machine, user, uid, expected, extra=""):
    """Problems unless every process of `user` (and those `extra` finds,
    the display manager's session process) runs in one root of the user's,
    not in the host's mount namespace, and the commands in `expected` are
    among them."""
    host = host_namespace(machine)
    found = processes(machine, f"-u {user}") + (processes(machine, extra) if extra else [])
    problems = []
    namespaces = {namespace for _, namespace, _, _ in found}
    if host in namespaces or len(namespaces) != 1:
        problems.append(f"the session's processes are not all in one root: {found}")
    if any(marker != f"uid={uid}" for _, _, marker, _ in found):
        problems.append(f"a process of the session does not see the user's root marker: {found}")
    commands = " ".join(command for _, _, _, command in found)
    problems += [f"no {name} among the session's processes: {found}" for name in expected if name not in commands]
    return problems


def leftovers(machine, user, uid, mounts_before):
    """What is left of a user's sessions once their user manager has
    stopped (and its ExecStopPost gc has run): roots, processes, mounts,
    cgroups, thin volumes.
    Not counted: the state directory's pin mount, made at the first login
    of the boot for every root, and the runtime directories of other users
    (a greeter that started after the logout)."""
    problems = []
    roots = roots_after_logout(machine)
    if roots != "no open session roots":
        problems.append(f"a root survived: {roots}")
    left = machine.root(f"pgrep -a -u {user}; find /sys/fs/cgroup -name 'loginchroot-*'; dmsetup ls | grep session",
                        check=False).strip()
    if left:
        problems.append(f"left after the logout: {left}")
    new_mounts = {target for target in mount_points(machine) - mounts_before if target != "/run/loginchroot/pins"
                  and (not target.startswith("/run/user/") or target == f"/run/user/{uid}")}
    if new_mounts:
        problems.append(f"mounts left on the host: {sorted(new_mounts)}")
    return problems


def mount_points(machine):
    return set(machine.root("findmnt -rn -o TARGET").split())


def home_file(machine, user, name):
    return machine.root(f"cat /home/{user}/{name} 2>/dev/null", check=False)


def install_script(machine, user, name, text):
    machine.ssh("root", f"install -o {user} -g {user} -m 755 /dev/stdin /home/{user}/{name}", input=text)
    return f"/home/{user}/{name}"


def reset_home(machine, user):
    machine.root(f"cd /home/{user} && rm -f {TYPED} {LOGOUT} lc-home-write lc-wayland-info .xsession-errors")


# greetd


@pytest.fixture(scope="module")
def greetd(machine, installed):
    """greetd on vt7 with the test greeter as its default session, run as
    Debian's greeter account _greetd (through the greetd-greeter PAM
    service, which includes common-session)."""
    machine.copy_in(f"{systemlab.ROOT}/Tests/fullsystem/greetd_greeter.py", "/usr/local/lib/lc-test-greeter")
    machine.root("chmod 755 /usr/local/lib/lc-test-greeter && "
                 "printf '[terminal]\\nvt = 7\\n\\n[default_session]\\ncommand = \"/usr/local/lib/lc-test-greeter\"\\n"
                 "user = \"_greetd\"\\n' > /etc/greetd/config.toml && "
                 f"install -d -o _greetd -m 700 {GREETER_DIR} && systemctl start greetd")
    yield
    machine.root(f"systemctl stop greetd; rm -rf {GREETER_DIR}")


def greetd_login(machine, user, command):
    """A login through greetd: a ticket for the greeter, then greetd
    restarted so that a greeter starts and takes it (no session is open)."""
    ticket = json.dumps({"user": user, "password": PASSWORD, "cmd": [command], "env": []})
    machine.ssh("root", f"install -o _greetd -m 600 /dev/stdin {GREETER_DIR}/login.json && systemctl restart greetd",
                input=ticket)


def greeter_log(machine):
    return machine.root(f"cat {GREETER_DIR}/log", check=False)


X_SESSION = """#!/bin/sh
# An X session as greetd starts one: the session runs its own X server,
# a terminal, and an X client that types a command into the terminal; a
# process of the user's that leaves the session (setsid).
# The X server takes the first free display (an X server killed at an
# earlier logout leaves its socket and lock in /tmp).
rm -f ~/.lc-display
Xvfb -displayfd 3 -nolisten tcp -screen 0 800x600x24 3>~/.lc-display &
until [ -s ~/.lc-display ]; do sleep 0.2; done
export DISPLAY=:$(cat ~/.lc-display)
busctl --user status >/dev/null  # the session bus, started by the user manager
setsid sleep 3000 &
xterm &
terminal=$!
# Type once the terminal's window is mapped; again if keystrokes were lost
# (under emulation a first try sometimes is). The command writes ~/{typed}
# first.
for attempt in 1 2 3; do
    xdotool search --sync --onlyvisible --class xterm windowfocus --sync type --delay 10 {command}
    xdotool key Return
    sleep 10
    [ -e ~/{typed} ] && break
done
wait $terminal
"""


def test_greetd_runs_an_x_session_in_the_root_and_leaves_nothing(machine, greetd):
    user, uid = "lcfs2", 1001
    stamp = str(time.time_ns())
    reset_home(machine, user)
    mounts = mount_points(machine)
    command = shlex.quote(typed_command(stamp, AWAIT_LOGOUT + "; exit"))
    script = install_script(machine, user, "lc-x-session", X_SESSION.format(typed=TYPED, command=command))
    greetd_login(machine, user, script)
    problems = []
    if not wait_for(lambda: home_file(machine, user, TYPED), 120):
        problems.append(f"the terminal never ran the typed command; greeter: {greeter_log(machine)}")
    else:
        typed = home_file(machine, user, TYPED)
        if f"uid={uid}" not in typed or host_namespace(machine) in typed:
            problems.append(f"the terminal's shell is not in the user's root: {typed}")
        problems += in_one_root(machine, user, uid, ("Xvfb -displayfd", "xterm", "dbus-daemon --session", "systemd --user"),
                                "-f '^/usr/sbin/greetd --session-worker'")
        if stamp in machine.root(f"cat {ROOT_WRITE} 2>/dev/null", check=False):
            problems.append("the root's write reached the host")
    machine.root(f"touch /home/{user}/{LOGOUT}")
    problems += leftovers(machine, user, uid, mounts)
    if stamp not in home_file(machine, user, "lc-home-write"):
        problems.append("the write to $HOME did not persist")
    after = machine.ssh(user, f"cat {ROOT_WRITE} 2>&1; sed -n 2p {MARKER}", check=False).stdout
    if stamp in after or f"uid={uid}" not in after:
        problems.append(f"the next login (ssh) found the root's write, or no root: {after}")
    problems += leftovers(machine, user, uid, mounts)
    record_system("desktop: greetd X session (Xvfb, xterm, xdotool) in the root, nothing left after logout", 1,
           1 - bool(problems), "xdotool typed into xterm; ns and marker of every process from the host", problems)
    assert not problems, "\n".join(problems)


def test_greetds_greeter_stays_on_the_host(machine, greetd):
    """The greeter runs as _greetd, an exempt user of the default config,
    through a PAM service that reaches the module: it keeps the host's root
    (the test before it is the control: greetd's user sessions get one).
    `check` says so, and names the fix for a config without it."""
    problems = []
    if not wait_for(lambda: "no ticket: waiting" in greeter_log(machine), 60):
        problems.append(f"no greeter waits: {greeter_log(machine)}")
    greeter = processes(machine, "-u _greetd -f lc-test-greeter")
    if not greeter or any(namespace != host_namespace(machine) or marker != "-" for _, namespace, marker, _ in greeter):
        problems.append(f"the greeter is not on the host: {greeter}")
    whole = machine.root("loginchroot check", check=False)
    machine.root(f"sed 's/^exempt_users = .*/exempt_users = root/' {CONFIG} > /root/greeters.conf")
    lacking = machine.ssh("root", "loginchroot --config /root/greeters.conf check", check=False).stdout
    machine.root("rm /root/greeters.conf")
    if "ok    display managers' greeters keep the host's root" not in whole:
        problems.append(f"check with the package's config: {whole}")
    if "greetd-greeter reaches the module, and its greeter runs as _greetd" not in lacking \
            or "fix: add _greetd to exempt_users" not in lacking:
        problems.append(f"check with exempt_users = root does not name greetd's greeter:\n{lacking}")
    record_system("desktop: greetd's greeter (_greetd, exempt by default) stays on the host; check names a config without it",
           1, 1 - bool(problems), str(greeter), problems)
    assert not problems, "\n".join(problems)


WAYLAND_SESSION = """#!/bin/sh
# A Wayland session: weston's headless backend (no seat, no GPU) and a
# client of it.
weston --backend=headless-backend.so --socket=lc-wayland --idle-time=0 &
compositor=$!
while [ ! -S "$XDG_RUNTIME_DIR/lc-wayland" ]; do sleep 0.2; done
WAYLAND_DISPLAY=lc-wayland wayland-info > ~/lc-wayland-info 2>&1
{command}
kill $compositor
"""


def test_greetd_runs_a_wayland_session_in_the_root_and_leaves_nothing(machine, greetd):
    user, uid = "lcfs2", 1001
    stamp = str(time.time_ns())
    reset_home(machine, user)
    mounts = mount_points(machine)
    script = install_script(machine, user, "lc-wayland-session",
                            WAYLAND_SESSION.format(command=typed_command(stamp, AWAIT_LOGOUT)))
    greetd_login(machine, user, script)
    problems = []
    if not wait_for(lambda: home_file(machine, user, TYPED), 120):
        problems.append(f"the Wayland session never started; greeter: {greeter_log(machine)}")
    else:
        if "interface: 'wl_compositor'" not in home_file(machine, user, "lc-wayland-info"):
            problems.append(f"wayland-info did not reach weston: {home_file(machine, user, 'lc-wayland-info')}")
        problems += in_one_root(machine, user, uid, ("weston --backend=headless", "weston-desktop-shell"),
                                "-f '^/usr/sbin/greetd --session-worker'")
    machine.root(f"touch /home/{user}/{LOGOUT}")
    problems += leftovers(machine, user, uid, mounts)
    if stamp not in home_file(machine, user, "lc-home-write"):
        problems.append("the write to $HOME did not persist")
    record_system("desktop: greetd Wayland session (weston headless, wayland-info) in the root, nothing left", 1,
           1 - bool(problems), "wayland-info's interfaces; ns and marker of every process from the host", problems)
    assert not problems, "\n".join(problems)


def test_a_crash_of_greetd_mid_session_leaves_no_root_once_gc_has_run(machine, greetd):
    """greetd and its session worker killed with SIGKILL in the middle of
    an X session (pam_close_session never runs), greetd restarted by
    systemd. The session's terminal and X server die with the worker (the
    hangup of its terminal); the process that left the session (setsid)
    keeps the logind session, so the user manager, so the root, until gc
    (the hourly timer's, here run at once) ends the dead session. Then
    nothing of the session is left."""
    user, uid = "lcfs1", 1000
    reset_home(machine, user)
    mounts = mount_points(machine)
    command = shlex.quote(typed_command("crash", AWAIT_LOGOUT + "; exit"))
    script = install_script(machine, user, "lc-x-session", X_SESSION.format(typed=TYPED, command=command))
    greetd_login(machine, user, script)
    problems = []
    if not wait_for(lambda: home_file(machine, user, TYPED), 120):
        problems.append(f"the session never started; greeter: {greeter_log(machine)}")
    opened = machine.root("loginchroot sessions")
    if user not in opened:
        problems.append(f"no root was open before the crash (the control): {opened}")
    machine.root("systemctl kill -s KILL greetd.service; pkill -KILL -f '^/usr/sbin/greetd --session-worker'",
                 check=False)
    if not wait_for(lambda: machine.root("systemctl is-active greetd", check=False).strip() == "active", 60):
        problems.append("systemd did not restart greetd")
    reclaimed = machine.root("loginchroot gc")
    if "dropped 1 dead session" not in reclaimed:
        problems.append(f"gc did not end the crashed session: {reclaimed}")
    problems += leftovers(machine, user, uid, mounts)
    record_system("desktop: greetd and its session worker killed mid-session: no root once gc has run", 1, 1 - bool(problems),
           "SIGKILL to greetd.service and the worker; a setsid process of the user's in the session", problems)
    assert not problems, "\n".join(problems)


# lightdm


LIGHTDM_CONFIG = "/etc/lightdm/lightdm.conf.d/zz-lc-desktop-test.conf"
FAILSAFE = "/usr/share/xsessions/lc-failsafe.desktop"


@pytest.fixture(scope="module")
def lightdm(machine, installed):
    """lightdm's own autologin (the lightdm-autologin PAM service) into
    SESSION, once per start: after a logout the greeter is one that only
    waits, so no second login follows. Xorg runs on the host with the
    dummy driver. The failsafe session gets an xsessions entry, as an
    admin who offers it adds one (Debian ships none)."""
    machine.root("systemctl stop greetd && "
                 "printf '[Desktop Entry]\\nName=Idle greeter\\nExec=sleep infinity\\nType=Application\\n' "
                 "> /usr/share/xgreeters/lc-idle-greeter.desktop && "
                 f"printf '[Desktop Entry]\\nName=Failsafe terminal\\nExec=failsafe\\nType=Application\\n' > {FAILSAFE}")

    def start(user, session):
        machine.root(f"printf '[Seat:*]\\nautologin-user={user}\\nautologin-user-timeout=0\\n"
                     f"autologin-session={session}\\ngreeter-session=lc-idle-greeter\\n' > {LIGHTDM_CONFIG} && "
                     "rm -f /var/log/lightdm/lightdm.log && systemctl restart lightdm")
    yield start
    machine.root(f"systemctl stop lightdm; rm -f {LIGHTDM_CONFIG} {FAILSAFE} /usr/share/xgreeters/lc-idle-greeter.desktop")


def lightdm_log(machine):
    return machine.root("cat /var/log/lightdm/lightdm.log", check=False)


def test_lightdm_default_session_joins_the_users_ssh_root(machine, lightdm):
    """An ssh session of the user is open; lightdm's autologin into
    Debian's default X session (Xsession falls back to x-terminal-emulator)
    joins its root. An X client in the root (xdotool, run over ssh) types
    into the session's terminal; the terminal's `exit` logs out."""
    user, uid = "lcfs1", 1000
    stamp = str(time.time_ns())
    reset_home(machine, user)
    mounts = mount_points(machine)
    ssh = machine.ssh_in_background(user, "sleep 3000")
    problems = []
    try:
        wait_for(lambda: user in machine.root("loginchroot sessions"))
        lightdm(user, "lightdm-xsession")
        if not wait_for(lambda: processes(machine, f"-u {user} -x xterm"), 120):
            problems.append(f"no terminal started:\n{lightdm_log(machine)[-2000:]}")
        else:
            problems += in_one_root(machine, user, uid, ("sleep 3000", "xterm", "dbus-daemon --session"),
                                    "-f '^lightdm --session-child'")
            command = typed_command(stamp, "exit")
            typing = machine.ssh(user, "export DISPLAY=:0 XAUTHORITY=~/.Xauthority; "
                                 "xdotool search --sync --onlyvisible --class xterm windowfocus --sync "
                                 f"type --delay 10 {shlex.quote(command)} && xdotool key Return", check=False)
            if typing.returncode != 0:
                problems.append(f"xdotool in the root could not reach the X server: {typing.stderr}")
            typed = home_file(machine, user, TYPED) if wait_for(lambda: home_file(machine, user, TYPED), 60) else ""
            if f"uid={uid}" not in typed:
                problems.append(f"the terminal's shell is not in the user's root: {typed!r}")
            if not wait_for(lambda: not processes(machine, f"-u {user} -x xterm"), 60):
                problems.append("the terminal's exit did not end the session")
            if "Running command /etc/X11/Xsession default" not in lightdm_log(machine):
                problems.append("lightdm did not run the default session")
            if not wait_for(lambda: user in machine.root("loginchroot sessions"), 5):
                problems.append("the root did not stay while the ssh session is open")
    finally:
        ssh.kill()
        ssh.wait()
    problems += leftovers(machine, user, uid, mounts)
    if stamp not in home_file(machine, user, "lc-home-write") or "X session started" not in home_file(machine, user, ".xsession-errors"):
        problems.append("$HOME (lc-home-write, .xsession-errors) did not keep the session's writes")
    record_system("desktop: lightdm default X session joins the user's ssh root, nothing left after both end", 1,
           1 - bool(problems), "xdotool over ssh from inside the root into xterm on Xorg (dummy driver)", problems)
    assert not problems, "\n".join(problems)


def test_lightdm_failsafe_session_lands_in_the_root(machine, lightdm):
    """The failsafe session (Xsession failsafe: x-terminal-emulator, no
    session scripts), the way around a root entered from an Xsession
    script: it lands in the root like any other session."""
    user, uid = "lcfs2", 1001
    stamp = str(time.time_ns())
    reset_home(machine, user)
    mounts = mount_points(machine)
    lightdm(user, "lc-failsafe")
    problems = []
    if not wait_for(lambda: processes(machine, f"-u {user} -x xterm"), 120):
        problems.append(f"no terminal started:\n{lightdm_log(machine)[-2000:]}")
    else:
        if "Running command /etc/X11/Xsession failsafe" not in lightdm_log(machine):
            problems.append("lightdm did not run the failsafe session")
        problems += in_one_root(machine, user, uid, ("xterm", "-geometry +1+1"), "-f '^lightdm --session-child'")
        command = typed_command(stamp, "exit")
        machine.root("export DISPLAY=:0 XAUTHORITY=/var/run/lightdm/root/:0; "
                     f"xdotool search --sync --onlyvisible --class xterm windowfocus --sync type --delay 10 {shlex.quote(command)} "
                     "&& xdotool key Return")
        typed = home_file(machine, user, TYPED) if wait_for(lambda: home_file(machine, user, TYPED), 60) else ""
        if f"uid={uid}" not in typed or host_namespace(machine) in typed:
            problems.append(f"the failsafe terminal's shell is not in the user's root: {typed!r}")
    problems += leftovers(machine, user, uid, mounts)
    if stamp not in home_file(machine, user, "lc-home-write"):
        problems.append("the write to $HOME did not persist")
    record_system("desktop: lightdm failsafe session (Xsession failsafe, x-terminal-emulator) in the root", 1,
           1 - bool(problems), "xterm -geometry +1+1 from Xsession failsafe; typed into with xdotool", problems)
    assert not problems, "\n".join(problems)
