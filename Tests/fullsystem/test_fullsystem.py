"""loginchroot installed as a Debian admin installs it, on a booted Debian 12
with systemd, logind and D-Bus: `apt install ./loginchroot_*.deb`, a dm-thin
store on two virtio disks made by `loginchroot init`, the module enabled by
`pam-auth-update --enable loginchroot`, nothing in /etc/pam.d edited by
hand. Then real logins: ssh, the serial console's getty and login, su -l
(and runuser -l, which the profile does not reach); a reboot with a session
open; apt purge.

The tests run in file order, on one boot (conftest.py).
"""
import glob
import os
import re
import time

import pexpect
import pytest

from conftest import MARKER, PASSWORD, ROOT, record

CONFIG = "/etc/loginchroot/loginchroot.conf"


def pam_digests(machine):
    return machine.root("cd /etc/pam.d && sha256sum * | sort")


@pytest.fixture(scope="session")
def installed(machine):
    """The package installed, the store made, the module enabled; and what
    /etc/pam.d held before, for the purge at the end."""
    debs = sorted(glob.glob(os.path.join(ROOT, ".build/deb/loginchroot_*_amd64.deb")), key=os.path.getmtime)
    assert debs, "no package: run 'make deb' first"
    before = pam_digests(machine)
    machine.copy_in(debs[-1], "/root/loginchroot.deb")
    machine.root("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /root/loginchroot.deb")
    assert pam_digests(machine) == before, "installing the package must change nothing in /etc/pam.d"
    machine.root(f"sed -i -e 's/^backend = .*/backend = dm-thin/' -e 's|^data_device =.*|data_device = /dev/vdb|' "
                 f"-e 's|^metadata_device =.*|metadata_device = /dev/vdc|' -e 's/^volume_size = .*/volume_size = 1G/' "
                 f"{CONFIG}")
    machine.root("loginchroot init --from-tar /root/golden.tar", timeout=1200)
    unused = machine.ssh("root", "loginchroot check", check=False)
    assert unused.returncode == 1 and "FAIL  PAM services that use the module" in unused.stdout \
        and "fix: pam-auth-update --enable loginchroot" in unused.stdout, f"check before enabling:\n{unused.stdout}"
    machine.root("DEBIAN_FRONTEND=noninteractive pam-auth-update --enable loginchroot")
    enabled = machine.root("loginchroot check")
    assert "ok    the user manager (systemd-user) gets a root" in enabled and "ok    syslog socket /dev/log" in enabled, enabled
    return before


def host_namespace(machine):
    return machine.root("readlink /proc/1/ns/mnt").strip()


def roots_after_logout(machine, seconds=60):
    """What `loginchroot sessions` says once the user manager, a session of
    the root too, has stopped (UserStopDelaySec, 10 s after the last
    logout) and its ExecStopPost gc has run."""
    deadline = time.monotonic() + seconds
    while True:
        found = machine.root("loginchroot sessions").strip()
        if found == "no open session roots" or time.monotonic() > deadline:
            return found
        time.sleep(2)


def test_the_package_is_enabled_after_pam_systemd(machine, installed):
    session = machine.root("grep -E '^session' /etc/pam.d/common-session")
    modules = [line.split()[2] for line in session.splitlines()]
    problems = []
    if "pam_loginchroot.so" not in modules or modules.index("pam_loginchroot.so") < modules.index("pam_systemd.so"):
        problems.append(f"the module is not after pam_systemd: {modules}")
    for unit, state in (("loginchroot.service", "enabled"), ("loginchroot-gc.timer", "enabled")):
        found = machine.root(f"systemctl is-enabled {unit}", check=False).strip()
        if found != state:
            problems.append(f"{unit} is {found}, not {state}")
    record("full system: the package installed and enabled with pam-auth-update", 1, 1 - bool(problems),
           f"booted in {machine.boot_seconds:.0f} s", problems)
    assert not problems, "\n".join(problems)


def test_an_ssh_key_login_lands_in_a_root_that_is_gone_after_logout(machine, installed):
    user = "lcfs1"
    stamp = str(time.time_ns())
    script = (f"cat {MARKER}; readlink /proc/self/ns/mnt; echo {stamp} > /etc/lc-root-write; "
              f"echo {stamp} > /tmp/lc-tmp-{stamp}; echo {stamp} > ~/lc-home-{stamp}; "
              f"loginctl --no-pager show-session $XDG_SESSION_ID -p Active -p Name; busctl --system list >/dev/null && echo bus-ok; "
              f"echo hostname=$(hostnamectl hostname) $(timedatectl show -p Timezone); (sleep 600 &) ; echo started")
    inside = machine.ssh(user, script, tty=True).stdout
    problems = []
    if "uid=1000" not in inside:
        problems.append(f"no root marker inside: {inside}")
    namespace = re.search(r"mnt:\[\d+\]", inside)
    if not namespace or namespace.group(0) == host_namespace(machine):
        problems.append(f"the session ran in the host's mount namespace: {inside}")
    if "Name=lcfs1" not in inside or "Active=yes" not in inside:
        problems.append(f"logind does not show the session: {inside}")
    if "bus-ok" not in inside or "hostname=lcfull Timezone=" not in inside:
        problems.append(f"the host's system bus, hostnamed or timedated are out of reach: {inside}")
    root_write = machine.root("cat /etc/lc-root-write 2>&1", check=False)
    kept = machine.root(f"cat /tmp/lc-tmp-{stamp} /home/{user}/lc-home-{stamp}", check=False)
    roots = roots_after_logout(machine) + machine.root("find /sys/fs/cgroup -name 'loginchroot-*'")
    survivors = machine.root(f"pgrep -u {user} -a", check=False)
    after = machine.root(f"last -n 5 {user}")
    if stamp in root_write:
        problems.append("the root's write to /etc reached the host")
    if kept.count(stamp) != 2:
        problems.append(f"/tmp and $HOME did not keep what the session wrote: {kept}")
    if survivors.strip():
        problems.append(f"processes of {user} survived the logout: {survivors}")
    if roots.strip() != "no open session roots":
        problems.append(f"a root or its cgroup survived: {roots}")
    if f"{user} " not in after or "pts/" not in after:
        problems.append(f"last does not show the ssh session on the host: {after}")
    record("full system: ssh key login, root gone after logout, /tmp and home kept", 1, 1 - bool(problems),
           "ssh -tt as lcfs1: marker, mount namespace, loginctl, writes, a background sleep", problems)
    assert not problems, "\n".join(problems)


def test_the_journal_has_the_modules_lines_and_sshds_after_the_session_opened(machine, installed):
    machine.ssh("lcfs2", "logger -t lcfs-inside 'written inside the root'")
    roots_after_logout(machine)
    journal = machine.root("journalctl -q --no-pager --since=-3min -o cat")
    problems = []
    if "entered new root lcfs2" not in journal:
        problems.append("the module's line for the new root is not in the journal")
    if "root lcfs2 destroyed" not in journal:
        problems.append("the module's line after the logout is not in the journal")
    if "written inside the root" not in journal:
        problems.append("a message logged from inside the root did not reach the journal")
    if not re.search(r"pam_unix\(sshd:session\): session closed for user lcfs2", journal):
        problems.append("sshd's session-closed line (after the session opened) is not in the journal")
    # The fix `check` gives for a missing /dev/log works here: its unit
    # exists, and its way to read the reasons finds the module's lines.
    hint = machine.ssh("root", "systemctl cat systemd-journald-dev-log.socket >/dev/null && "
                       "journalctl -q --no-pager -g pam_loginchroot | grep -c 'entered new root'", check=False)
    if hint.returncode != 0 or int(hint.stdout.strip() or 0) < 1:
        problems.append(f"check's /dev/log fix does not work on Debian 12: {hint.stdout} {hint.stderr}")
    record("full system: the journal has the module's, sshd's and the session's lines", 1, 1 - bool(problems),
           "journalctl after an ssh login of lcfs2", problems)
    assert not problems, "\n".join(problems) + "\n" + journal[-3000:]


def test_su_lands_in_the_users_root(machine, installed):
    out = machine.root(f"su -l lcfs2 -c 'cat {MARKER}; readlink /proc/self/ns/mnt'")
    problems = []
    if "uid=1001" not in out:
        problems.append(f"su -l: no root marker: {out}")
    if host_namespace(machine) in out:
        problems.append(f"su -l: ran in the host's namespace: {out}")
    if roots_after_logout(machine) != "no open session roots":
        problems.append("su -l: a root survived")
    record("full system: su -l lands in the user's root", 1, 1 - bool(problems), out.strip().replace("\n", " "),
           problems)
    assert not problems, "\n".join(problems)


def test_runuser_is_roots_tool_and_stays_on_the_host(machine, installed):
    """Debian's runuser PAM service includes no common-session, so no
    pam-auth-update profile reaches it: like `sudo -u`, it is root running
    a program as a user, on the host (README, Install on Debian)."""
    out = machine.root(f"runuser -l lcfs2 -c 'cat {MARKER} 2>&1; readlink /proc/self/ns/mnt'")
    held = host_namespace(machine) in out and "No such file" in out
    record("full system: runuser -l (root's tool, not in the profile) runs on the host, as documented", 1, int(held),
           out.strip().replace("\n", " "), [] if held else [f"runuser -l did not run on the host: {out}"])
    assert held, out


PROBE = ("[D-BUS Service]\nName=org.lctest.Probe\n"
         "Exec=/bin/sh -c 'cat /run/loginchroot-session > /tmp/lc-probe-$(id -u); exit 1'\n")


def test_the_user_manager_and_what_it_starts_run_inside_the_root(machine, installed):
    """user@UID.service joins the user's root (the systemd-user PAM service
    includes common-session-noninteractive, where the profile puts the
    module), and so does what it starts: systemd-run --user, and a service
    the session bus activates. All of it ends after the last logout."""
    login = machine.ssh_in_background("lcfs2", "sleep 900")
    problems = []
    try:
        deadline = time.monotonic() + 120
        while "active" != machine.root("systemctl is-active user@1001.service", check=False).strip():
            if time.monotonic() > deadline:
                break
            time.sleep(2)
        machine.root("rm -f /tmp/lc-probe-1001")
        inside = machine.ssh("lcfs2", "readlink /proc/self/ns/mnt; systemctl --user is-system-running --wait; "
                             f"systemd-run --user --wait -q -P cat {MARKER}; "
                             "mkdir -p ~/.local/share/dbus-1/services; "
                             f"printf \"{PROBE}\" > ~/.local/share/dbus-1/services/org.lctest.Probe.service; "
                             "busctl --user --timeout=5 call org.lctest.Probe / org.lctest.Probe Ping 2>/dev/null; "
                             "sleep 1; cat /tmp/lc-probe-1001", check=False).stdout
        manager = machine.root("readlink /proc/$(systemctl show -p MainPID --value user@1001.service)/ns/mnt; "
                               f"cat /proc/$(systemctl show -p MainPID --value user@1001.service)/root{MARKER}",
                               check=False)
        namespace = re.search(r"mnt:\[\d+\]", inside)
        if not namespace or namespace.group(0) == host_namespace(machine):
            problems.append(f"the login is not in a root: {inside}")
        elif namespace.group(0) not in manager or "uid=1001" not in manager:
            problems.append(f"the user manager is not in the login's root: login {namespace.group(0)}, manager {manager}")
        if inside.count("uid=1001") < 2:
            problems.append(f"systemd-run --user or the D-Bus activated service did not run in the root: {inside}")
    finally:
        login.kill()
        login.wait()
    left = roots_after_logout(machine)
    if left != "no open session roots":
        problems.append(f"the root outlived the last logout and the manager: {left}")
    survivors = machine.root("pgrep -u lcfs2 -a", check=False)
    if survivors.strip():
        problems.append(f"processes of lcfs2 survived: {survivors}")
    record("full system: the user manager, systemd-run --user and D-Bus activation run in the root", 1,
           1 - bool(problems), "ssh session held; manager's ns and marker from the host; a probe service", problems)
    assert not problems, "\n".join(problems)


def test_what_a_root_reaches_of_the_host_gives_no_more_than_the_host_does(machine, installed):
    """The default binds this tier needed, attacked from inside a root by
    its user, each beside a control that must succeed: the writable
    /sys/fs/cgroup (leave the session's cgroup, freeze a parent; control:
    make a cgroup in the subtree systemd delegated to the user), systemd's
    notify socket (tell PID 1 the user manager is stopping, from one of
    the user's services; control: the message is sent), logind's state
    (write it; control: read it), the system bus (rename the host, linger,
    start a system unit; control: read the host name). And a service of the
    user's left running at logout dies with the root."""
    user, uid = "lcfs1", 1000
    delegated = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service"
    script = f"""
        try() {{ if sh -c "$2" >/dev/null 2>&1; then echo "$1=yes"; else echo "$1=no"; fi; }}
        own=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
        try leave-cgroup 'echo $$ > /sys/fs/cgroup/cgroup.procs'
        try freeze-parent "echo 1 > $(dirname $own)/cgroup.freeze"
        try freeze-user-slice 'echo 1 > /sys/fs/cgroup/user.slice/cgroup.freeze'
        try control-delegated-mkdir 'mkdir {delegated}/lc-probe && rmdir {delegated}/lc-probe'
        grep -q ' /sys/fs/cgroup rw' /proc/self/mountinfo && echo control-cgroupfs-rw=yes
        try notify-sent "systemd-run --user --wait -q sh -c 'NOTIFY_SOCKET=/run/systemd/notify systemd-notify STOPPING=1'"
        try write-logind-state 'touch /run/systemd/sessions/lc-probe'
        try control-read-logind-state 'ls /run/systemd/sessions | grep -q .'
        try rename-host 'hostnamectl set-hostname lc-evil'
        try linger 'loginctl enable-linger'
        try start-system-unit 'busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager StartUnit ss cron.service replace'
        try control-read-hostname 'test "$(hostnamectl hostname)" = lcfull'
        systemd-run --user -q --unit=lc-left-behind sleep 900 && echo left-behind-started=yes
    """
    out = machine.ssh(user, script, check=False).stdout
    said = dict(line.split("=", 1) for line in out.split() if "=" in line)
    problems = []
    for attack in ("leave-cgroup", "freeze-parent", "freeze-user-slice", "write-logind-state", "rename-host", "linger",
                   "start-system-unit"):
        if said.get(attack) != "no":
            problems.append(f"{attack}: {said.get(attack, 'not tried')} (must fail)")
    for control in ("control-delegated-mkdir", "control-cgroupfs-rw", "notify-sent", "control-read-logind-state",
                    "control-read-hostname", "left-behind-started"):
        if said.get(control) != "yes":
            problems.append(f"{control}: {said.get(control, 'not reached')} (the control must succeed)")
    host = machine.root(f"systemctl is-active user@{uid}.service; hostnamectl hostname; "
                        f"ls /var/lib/systemd/linger 2>/dev/null; systemctl is-active cron", check=False)
    if not host.startswith("active\n"):
        problems.append(f"PID 1 took the user's notify message for their user manager's: {host}")
    if "lc-evil" in host or user in host.split():
        problems.append(f"the host changed: {host}")
    left = roots_after_logout(machine)
    if left != "no open session roots":
        problems.append(f"the root outlived the logout: {left}")
    survivors = machine.root(f"pgrep -u {user} -a", check=False)
    if survivors.strip():
        problems.append(f"a service of the user's outlived the logout: {survivors}")
    record("full system: a root's user against the cgroupfs, notify socket, logind state and system bus binds", 1,
           1 - bool(problems), " ".join(f"{k}={v}" for k, v in sorted(said.items())), problems)
    assert not problems, "\n".join(problems) + "\n" + out


def test_a_console_login_through_getty_and_login(machine, installed):
    console = machine.console
    console.sendline("")
    console.expect("login:", timeout=120)
    console.sendline("lcfs1")
    console.expect("Password:", timeout=120)
    console.sendline(PASSWORD)
    console.expect(r"\$ ", timeout=300)
    console.sendline(f"cat {MARKER}; echo console-$((6*7))")
    console.expect("console-42", timeout=120)
    shown = console.before
    while_open = machine.root("loginchroot sessions; who")
    console.sendline("exit")
    console.expect("login:", timeout=300)
    problems = []
    if "uid=1000" not in shown:
        problems.append(f"the console session has no root marker: {shown}")
    if "lcfs1" not in while_open or "ttyS0" not in while_open:
        problems.append(f"loginchroot sessions / who do not show the console session: {while_open}")
    if roots_after_logout(machine) != "no open session roots":
        problems.append("the console session's root survived its logout")
    record("full system: console login through agetty and login (password)", 1, 1 - bool(problems),
           "pexpect on the serial console", problems)
    assert not problems, "\n".join(problems)


def test_a_reboot_with_sessions_open_leaves_nothing_and_the_next_login_works(machine, installed):
    session = machine.ssh_in_background("lcfs1", "echo in; sleep 3000")
    deadline = time.monotonic() + 120
    while "lcfs1" not in machine.root("loginchroot sessions") and time.monotonic() < deadline:
        time.sleep(1)
    held = machine.root("loginchroot sessions")
    seconds = machine.reboot()
    session.kill()
    session.wait()
    problems = []
    if "lcfs1" not in held:
        problems.append(f"no root was open before the reboot (the control): {held}")
    state = machine.root("systemctl is-active loginchroot.service; loginchroot sessions; "
                         "systemctl show -p ActiveEnterTimestampMonotonic loginchroot.service systemd-user-sessions.service")
    if not state.startswith("active"):
        problems.append(f"loginchroot.service is not active after the reboot: {state}")
    stamps = [int(value) for value in re.findall(r"=(\d+)", state)]
    if len(stamps) == 2 and not stamps[0] <= stamps[1]:
        problems.append(f"logins were allowed before the store was online: {state}")
    if "no open session roots" not in state:
        problems.append(f"a root from before the reboot is still there: {state}")
    leftovers = machine.root("dmsetup ls | grep -c session || true").strip()
    if leftovers != "0":
        problems.append(f"thin volumes of sessions from before the reboot remain: {leftovers}")
    inside = machine.ssh("lcfs1", f"cat {MARKER}", check=False)
    if inside.returncode != 0 or "uid=1000" not in inside.stdout:
        problems.append(f"the first login after the reboot failed: {inside.stdout} {inside.stderr}")
    record("full system: reboot with a session open, then log in", 1, 1 - bool(problems),
           f"reboot to ssh in {seconds:.0f} s", problems)
    assert not problems, "\n".join(problems)


def test_apt_purge_leaves_no_trace(machine, installed):
    # A removal with a root open is refused (the package tier proves it);
    # the last login's root ends with its user manager.
    assert roots_after_logout(machine) == "no open session roots"
    machine.root("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q loginchroot")
    problems = []
    if pam_digests(machine) != installed:
        problems.append("/etc/pam.d differs from before the install")
    left = machine.root("ls /lib/systemd/system/loginchroot* /etc/systemd/system/*/loginchroot* 2>/dev/null; "
                        "grep loginchroot /proc/self/mountinfo; find /sys/fs/cgroup -name 'loginchroot-*'; "
                        "dmsetup ls | grep loginchroot; ls -d /etc/loginchroot /run/loginchroot 2>/dev/null", check=False)
    if left.strip():
        problems.append(f"left after purge: {left}")
    record("full system: apt purge", 1, 1 - bool(problems), "pam.d digests, units, mounts, cgroups, dm devices",
           problems)
    assert not problems, "\n".join(problems)
