"""loginchroot installed as a Debian admin installs it, on a booted Debian 12
with systemd, logind and D-Bus: `apt install ./loginchroot_*.deb`, a dm-thin
store on two virtio disks made by `loginchroot init`, the module enabled by
`pam-auth-update --enable loginchroot`, nothing in /etc/pam.d edited by
hand. Then real logins: ssh, the serial console's getty and login, su -l
(and runuser -l, which the profile does not reach); a reboot with a session
open; apt purge.

The tests run in file order, on one boot (conftest.py).
"""
import json
import re
import subprocess
import time

from lclab import systemlab
from lclab.systemlab import (CONFIG, MARKER, PASSWORD, ROOT_WRITE, host_namespace, pam_digests, record_system,
                             roots_after_logout, wait_for)


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
    record_system("full system: the package installed and enabled with pam-auth-update", 1, 1 - bool(problems),
           f"booted in {machine.boot_seconds:.0f} s", problems)
    assert not problems, "\n".join(problems)


def test_check_names_a_missing_cgroup_bind_the_user_manager_needs(machine, installed):
    """The package's config binds /sys/fs/cgroup writable (the control:
    check says the user manager gets a root); a copy without that bind
    makes check name the line to add."""
    whole = machine.ssh("root", "loginchroot check", check=False).stdout
    machine.root(f"sed '\\|^bind = /sys/fs/cgroup |d' {CONFIG} > /root/no-cgroup.conf")
    lacking = machine.ssh("root", "loginchroot --config /root/no-cgroup.conf check", check=False)
    machine.root("rm /root/no-cgroup.conf")
    problems = []
    if "ok    the user manager (systemd-user) gets a root" not in whole:
        problems.append(f"check with the package's config: {whole}")
    if lacking.returncode != 1 or "has no writable /sys/fs/cgroup" not in lacking.stdout \
            or "fix: add 'bind = /sys/fs/cgroup rw recursive optional' to [binds]" not in lacking.stdout:
        problems.append(f"check without the cgroup bind:\n{lacking.stdout}")
    record_system("full system: check names the cgroup bind the user manager needs", 1, 1 - bool(problems), "", problems)
    assert not problems, "\n".join(problems)


def test_an_ssh_key_login_lands_in_a_root_that_is_gone_after_logout(machine, installed):
    user = "lcfs1"
    stamp = str(time.time_ns())
    script = (f"cat {MARKER}; readlink /proc/self/ns/mnt; echo {stamp} > {ROOT_WRITE} && echo wrote-root; "
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
    root_write = machine.root(f"cat {ROOT_WRITE} 2>&1", check=False)
    kept = machine.root(f"cat /tmp/lc-tmp-{stamp} /home/{user}/lc-home-{stamp}", check=False)
    roots = roots_after_logout(machine) + machine.root("find /sys/fs/cgroup -name 'loginchroot-*'")
    survivors = machine.root(f"pgrep -u {user} -a", check=False)
    after = machine.root(f"last -n 5 {user}")
    if "wrote-root" not in inside:
        problems.append(f"the session could not write {ROOT_WRITE} in its root (the control): {inside}")
    if stamp in root_write:
        problems.append(f"the root's write to {ROOT_WRITE} reached the host")
    if kept.count(stamp) != 2:
        problems.append(f"/tmp and $HOME did not keep what the session wrote: {kept}")
    if survivors.strip():
        problems.append(f"processes of {user} survived the logout: {survivors}")
    if roots.strip() != "no open session roots":
        problems.append(f"a root or its cgroup survived: {roots}")
    if f"{user} " not in after or "pts/" not in after:
        problems.append(f"last does not show the ssh session on the host: {after}")
    record_system("full system: ssh key login, root gone after logout, /tmp and home kept", 1, 1 - bool(problems),
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
    record_system("full system: the journal has the module's, sshd's and the session's lines", 1, 1 - bool(problems),
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
    record_system("full system: su -l lands in the user's root", 1, 1 - bool(problems), out.strip().replace("\n", " "),
           problems)
    assert not problems, "\n".join(problems)


def test_runuser_is_roots_tool_and_stays_on_the_host(machine, installed):
    """Debian's runuser PAM service includes no common-session, so no
    pam-auth-update profile reaches it: like `sudo -u`, it is root running
    a program as a user, on the host (README, Install on Debian)."""
    out = machine.root(f"runuser -l lcfs2 -c 'cat {MARKER} 2>&1; readlink /proc/self/ns/mnt'")
    held = host_namespace(machine) in out and "No such file" in out
    record_system("full system: runuser -l (root's tool, not in the profile) runs on the host, as documented", 1, int(held),
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
        wait_for(lambda: machine.root("systemctl is-active user@1001.service", check=False).strip() == "active")
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
    record_system("full system: the user manager, systemd-run --user and D-Bus activation run in the root", 1,
           1 - bool(problems), "ssh session held; manager's ns and marker from the host; a probe service", problems)
    assert not problems, "\n".join(problems)


POLKIT_RULE = "/usr/share/polkit-1/rules.d/50-loginchroot.rules"


def test_only_root_makes_a_user_linger(machine, installed):
    """logind's own policy lets every user linger (set-self-linger: yes),
    which would keep their root and all it runs past every logout. The
    package's polkit rule says no; the control: with the rule moved away,
    the same user's `loginctl enable-linger` works (polkit runs, so the
    refusal is the rule's)."""
    user = "lcfs2"
    problems = []
    refused = machine.ssh(user, "loginctl enable-linger", check=False)
    if refused.returncode == 0:
        problems.append("a user made themselves linger despite the package's polkit rule")
    machine.root(f"mv {POLKIT_RULE} /root/polkit-rule.saved")
    try:
        # polkitd rereads its rules when the directory changes.
        allowed = wait_for(lambda: machine.ssh(user, "loginctl enable-linger", check=False).returncode == 0, 60)
    finally:
        machine.root(f"mv /root/polkit-rule.saved {POLKIT_RULE}; loginctl disable-linger {user}")
    if not allowed:
        problems.append("without the rule the user could not linger either (the control): is polkit running?")
    left = roots_after_logout(machine, seconds=90)
    if left != "no open session roots":
        problems.append(f"a root outlived the test's logins: {left}")
    record_system("full system: only root makes a user linger (the package's polkit rule)", 1, 1 - bool(problems),
           refused.stderr.strip()[:200], problems)
    assert not problems, "\n".join(problems)


def test_a_lingering_users_manager_makes_the_root_and_keeps_it_until_the_linger_ends(machine, installed):
    """`loginctl enable-linger USER` (root's, on the host) starts the
    user's manager with no login: it makes the user's root then, a login
    joins it, and it outlives the logout; `disable-linger` ends the manager
    and, through its ExecStopPost gc, the root."""
    user, uid = "lcfs2", 1001
    assert roots_after_logout(machine) == "no open session roots", "the tier left a root open before this test"
    machine.root(f"loginctl enable-linger {user}")
    problems = []
    try:
        if not wait_for(lambda: machine.root(f"systemctl is-active user@{uid}.service", check=False).strip() == "active"):
            problems.append("the lingering user's manager never started")
        manager = machine.root(f"pid=$(systemctl show -p MainPID --value user@{uid}.service); "
                               f"readlink /proc/$pid/ns/mnt; cat /proc/$pid/root{MARKER}", check=False)
        login = machine.ssh(user, "readlink /proc/self/ns/mnt", check=False).stdout
        namespace = re.search(r"mnt:\[\d+\]", manager)
        if f"uid={uid}" not in manager or not namespace or namespace.group(0) == host_namespace(machine):
            problems.append(f"the lingering manager is not in a root of the user's: {manager}")
        elif namespace.group(0) not in login:
            problems.append(f"a login did not join the lingering manager's root: manager {manager}, login {login}")
        time.sleep(15)  # past UserStopDelaySec: without the linger the manager would stop now
        kept = machine.root("loginchroot sessions")
        if user not in kept:
            problems.append(f"the root did not outlive the logout while the user lingers: {kept}")
    finally:
        machine.root(f"loginctl disable-linger {user}")
    left = roots_after_logout(machine, seconds=90)
    if left != "no open session roots":
        problems.append(f"the root outlived disable-linger: {left}")
    survivors = machine.root(f"pgrep -u {user} -a", check=False)
    if survivors.strip():
        problems.append(f"processes of {user} survived disable-linger: {survivors}")
    record_system("full system: loginctl enable-linger makes the root at once, disable-linger ends it", 1, 1 - bool(problems),
           "manager's ns and marker from the host; a login joins; kept 15 s after logout", problems)
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
    record_system("full system: a root's user against the cgroupfs, notify socket, logind state and system bus binds", 1,
           1 - bool(problems), " ".join(f"{k}={v}" for k, v in sorted(said.items())), problems)
    assert not problems, "\n".join(problems) + "\n" + out


def test_a_users_cron_job_runs_in_a_root_that_ends_with_the_job(machine, installed):
    """cron's PAM service includes common-session-noninteractive, so a job
    of the user's (installed by root on the host: crontab -u) runs in a
    root of its own, and the root ends with the job (cron's stack has no
    pam_systemd, so no user manager holds it)."""
    user, uid = "lcfs1", 1000
    out = f"/tmp/lc-cron-{uid}"
    machine.root(f"rm -f {out}; echo '* * * * * cat {MARKER} > {out}.part; readlink /proc/self/ns/mnt >> {out}.part; "
                 f"mv {out}.part {out}' | crontab -u {user} -")
    try:
        ran = wait_for(lambda: machine.ssh("root", f"test -s {out}", check=False).returncode == 0, seconds=150)
    finally:
        machine.root(f"crontab -u {user} -r")
    job = machine.root(f"cat {out}", check=False)
    problems = []
    if not ran:
        problems.append("the cron job never ran (the control)")
    elif f"uid={uid}" not in job or host_namespace(machine) in job:
        problems.append(f"the cron job did not run in a root of the user's: {job}")
    left = roots_after_logout(machine)
    if left != "no open session roots":
        problems.append(f"the cron job's root outlived the job: {left}")
    record_system("full system: a user's cron job runs in a root that ends with it", 1, 1 - bool(problems),
           job.strip().replace("\n", " "), problems)
    assert not problems, "\n".join(problems)


MOTD = "The programs included with the Debian GNU/Linux system are free software"


def test_a_refused_login_stops_at_the_module_without_the_hosts_motd(machine, installed):
    """A session the module refuses ends the stack there (requisite): no
    shell, no motd, and pam_motd never runs on the host for the user (a
    probe in the host's /etc/update-motd.d records the loginuid of every
    login that runs it). The refusal: a config that does not parse, which
    fails closed. Controls: the same login with the config whole shows the
    motd (from the root's /etc/motd) and runs the shell; root's own logins
    (exempt) reach the probe."""
    user, uid = "lcfs1", 1000
    shell = "echo ran-$((6*7)); exit\n"
    probe = "/etc/update-motd.d/99-lc-probe"
    machine.ssh("root", f"cat > {probe}; chmod 755 {probe}; rm -f /run/lc-motd-probe",
                input='#!/bin/sh\necho "$(cat /proc/self/loginuid)" >> /run/lc-motd-probe\n')
    problems = []
    try:
        opened = machine.ssh(user, "", tty=True, input=shell, check=False).stdout
        assert roots_after_logout(machine) == "no open session roots"  # its gc must read a whole config
        machine.root(f"cp -p {CONFIG} /root/config.saved; echo 'lc_bogus_setting = 1' >> {CONFIG}")
        try:
            refused = machine.ssh(user, "", tty=True, input=shell, check=False)
        finally:
            machine.root(f"mv /root/config.saved {CONFIG}")
        probed = machine.root("cat /run/lc-motd-probe", check=False).split()
        journal = machine.root("journalctl -q --no-pager --since=-3min -o cat -g pam_loginchroot", check=False)
    finally:
        machine.root(f"rm -f {probe} /run/lc-motd-probe")
    if "ran-42" not in opened or MOTD not in opened:
        problems.append(f"the control login did not show the motd and run the shell: {opened}")
    if "ran-42" in refused.stdout or MOTD in refused.stdout:
        problems.append(f"the refused login went on: {refused.stdout}")
    if str(uid) in probed:
        problems.append(f"pam_motd ran on the host for the refused user: {probed}")
    if "0" not in probed:
        problems.append(f"the probe never ran for root's own logins (the control): {probed}")
    if "unknown key 'lc_bogus_setting'" not in journal:
        problems.append(f"the journal does not say why the login was refused: {journal[-2000:]}")
    record_system("full system: a refused login stops at the module (no shell, no motd, nothing on the host)", 1,
           1 - bool(problems), f"refused ssh exit {refused.returncode}; probe saw loginuids {sorted(set(probed))}",
           problems)
    assert not problems, "\n".join(problems)


def test_an_upgrade_restarts_nothing_under_an_open_session(machine, installed, tmp_path):
    """The same package with a higher version, installed with apt while a
    session is open: loginchroot.service and the gc timer keep their
    invocation (nothing stopped or restarted them), the session keeps its
    root, and a new login joins it."""
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-R", systemlab.newest_package(), str(unpacked)], check=True)
    control = (unpacked / "DEBIAN/control").read_text()
    version = re.search(r"^Version: (.+)$", control, re.M).group(1)
    (unpacked / "DEBIAN/control").write_text(control.replace(f"Version: {version}", f"Version: {version}+upgrade1"))
    upgrade = tmp_path / "loginchroot-upgrade.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(unpacked), str(upgrade)], check=True,
                   capture_output=True)
    machine.copy_in(str(upgrade), "/root/loginchroot-upgrade.deb")
    units = "systemctl show -p InvocationID -p ActiveState loginchroot.service loginchroot-gc.timer"
    session = machine.ssh_in_background("lcfs1", "sleep 3000")
    problems = []
    try:
        if not wait_for(lambda: "lcfs1" in machine.root("loginchroot sessions")):
            problems.append("no root opened for the held session (the control)")
        before = machine.root(units)
        machine.root("DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/loginchroot-upgrade.deb", timeout=600)
        after = machine.root(units)
        installed_version = machine.root("dpkg-query -W -f '${Version}' loginchroot")
        joined = machine.ssh("lcfs1", f"cat {MARKER}", check=False).stdout
        if installed_version != f"{version}+upgrade1":
            problems.append(f"the upgrade was not installed: {installed_version}")
        if before != after or "ActiveState=active" not in after:
            problems.append(f"the upgrade stopped or restarted a unit:\nbefore {before}\nafter {after}")
        if session.poll() is not None:
            problems.append("the held session ended during the upgrade")
        if "uid=1000" not in joined:
            problems.append(f"a login after the upgrade did not join the open root: {joined}")
    finally:
        session.kill()
        session.wait()
    if roots_after_logout(machine) != "no open session roots":
        problems.append("the root outlived the session after the upgrade")
    record_system("full system: apt upgrade with a session open restarts nothing", 1, 1 - bool(problems),
           f"{version} to {version}+upgrade1", problems)
    assert not problems, "\n".join(problems)


def test_a_console_login_through_getty_and_login(machine, installed):
    shown, while_open = systemlab.console_login(machine, "lcfs1", PASSWORD, f"cat {MARKER}",
                                                lambda: machine.root("loginchroot sessions; who"))
    problems = []
    if "uid=1000" not in shown:
        problems.append(f"the console session has no root marker: {shown}")
    if "lcfs1" not in while_open or "ttyS0" not in while_open:
        problems.append(f"loginchroot sessions / who do not show the console session: {while_open}")
    if roots_after_logout(machine) != "no open session roots":
        problems.append("the console session's root survived its logout")
    record_system("full system: console login through agetty and login (password)", 1, 1 - bool(problems),
           "pexpect on the serial console", problems)
    assert not problems, "\n".join(problems)


def test_a_reboot_with_sessions_open_leaves_nothing_and_the_next_login_works(machine, installed):
    session = machine.ssh_in_background("lcfs1", "echo in; sleep 3000")
    wait_for(lambda: "lcfs1" in machine.root("loginchroot sessions"))
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
    record_system("full system: reboot with a session open, then log in", 1, 1 - bool(problems),
           f"reboot to ssh in {seconds:.0f} s", problems)
    assert not problems, "\n".join(problems)


FLEET_SETUP = r"""
set -e
# The build host's key; its public half is what the login machine trusts.
mkdir -m 700 -p /root/fleet-gpg
gpg --homedir /root/fleet-gpg --batch --passphrase '' --quick-gen-key 'lab fleet' ed25519 sign never 2>/dev/null
fingerprint=$(gpg --homedir /root/fleet-gpg --list-secret-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')
gpg --homedir /root/fleet-gpg --armor --export "$fingerprint" > /etc/loginchroot/fleet.asc
# A small image (bash, cat, their libraries, the directories a root mounts
# on), published on a build host's store of its own and exported.
image=/root/fleet-image
mkdir -p $image/etc $image/dev $image/proc $image/sys $image/run $image/tmp $image/var/tmp $image/var/log $image/home
for file in /bin/bash /bin/cat /bin/id $(ldd /bin/bash /bin/cat /bin/id | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*[^:]$/ {print $1}'); do
    mkdir -p "$image$(dirname "$file")" && cp -L "$file" "$image$file"
done
cp /etc/passwd /etc/group $image/etc/
echo 'from the fleet' > $image/etc/fleet-marker
printf '[store]\nbackend = overlay\npath = /var/lib/lcfleet-build\n[session]\nstate_dir = /run/lcfleet-build\n' > /root/build.conf
printf '[fleet]\nsigning_key = %s\ngpg_home = /root/fleet-gpg\n' "$fingerprint" >> /root/build.conf
loginchroot init --config /root/build.conf --from-dir $image >/dev/null
loginchroot publish --config /root/build.conf --export /srv/fleet-repo
# The web server, on loopback only; the login machine's [fleet] url.
systemd-run --unit=lcfleet-http python3 -m http.server --bind 127.0.0.1 --directory /srv/fleet-repo 8080
sed -i 's|^\[fleet\]$|[fleet]\nurl = http://127.0.0.1:8080/|' /etc/loginchroot/loginchroot.conf
"""
PULL_TIMER_DROPIN = "/run/systemd/system/loginchroot-pull.timer.d"


def pull_service_finished(machine):
    """Whether loginchroot-pull.service ran (it has an invocation) and is done."""
    shown = machine.root("systemctl show -p InvocationID -p ActiveState loginchroot-pull.service").split()
    ran = "InvocationID=" not in shown  # an empty id: never started
    return ran and ("ActiveState=inactive" in shown or "ActiveState=failed" in shown)


def fleet_marker_of_master(machine):
    """/etc/fleet-marker as `master run` sees it (dm-thin's pull fills
    master, then publishes its snapshot)."""
    shown = machine.ssh("root", "loginchroot master run -- /bin/cat /etc/fleet-marker", check=False)
    return (shown.stdout + shown.stderr).strip()


def test_the_pull_timer_publishes_the_fleets_signed_commit(machine, installed):
    """loginchroot-pull.timer, enabled on a booted systemd machine, starts
    loginchroot-pull.service, whose `update --pull` fetches the signed
    commit from a web server on 127.0.0.1 and publishes it on the dm-thin
    store (through master: master holds the commit's files and the new
    current generation is its snapshot), starting loginchroot.service if
    it is not active. The
    shipped schedule is hourly; a drop-in of the test's makes the timer
    fire 2 s after it starts. The commit is a small image (bash and cat),
    so this runs last before the purge: no login after it needs more."""
    problems = []
    before = json.loads(machine.root("loginchroot status --json"))["current"]
    machine.root(FLEET_SETUP, timeout=600)
    # As on a machine that made its store after its last boot: loginchroot.service
    # never ran (its condition failed at boot); the pull must start it.
    machine.root("systemctl stop loginchroot.service")
    machine.root(f"mkdir -p {PULL_TIMER_DROPIN} && printf '[Timer]\\nOnActiveSec=2s\\nRandomizedDelaySec=0\\n' > "
                 f"{PULL_TIMER_DROPIN}/lab.conf && systemctl daemon-reload && systemctl enable --now loginchroot-pull.timer")
    try:
        ran = wait_for(lambda: pull_service_finished(machine), 600)
        result = machine.root("systemctl show -p Result loginchroot-pull.service").strip()
        journal = machine.root("journalctl -q -o cat -u loginchroot-pull.service")
        published = re.search(r"pulled commit \w+ of loginchroot/golden and published (gen-\d+)", journal)
        if not ran or result != "Result=success" or not published:
            problems.append(f"the timer's service did not pull and publish ({result}): {journal}")
        after, marker = json.loads(machine.root("loginchroot status --json"))["current"], fleet_marker_of_master(machine)
        if marker != "from the fleet" or not published or after != published.group(1) or after == before:
            problems.append(f"current is {after} (was {before}), master's marker {marker!r}: not the pulled image")
        machine.root("systemctl start loginchroot-pull.service")
        again = machine.root("journalctl -q -o cat -u loginchroot-pull.service")
        if "up to date: " not in again:
            problems.append(f"a second run found something new: {again}")
    finally:
        machine.root(f"systemctl disable --now loginchroot-pull.timer; rm -r {PULL_TIMER_DROPIN}; "
                     "systemctl daemon-reload; systemctl stop lcfleet-http", check=False)
    record_system("full system: loginchroot-pull.timer pulls the fleet's signed commit over HTTP on loopback and "
                  "publishes it (dm-thin, through master)", 1, 1 - bool(problems), "", problems)
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
    record_system("full system: apt purge", 1, 1 - bool(problems), "pam.d digests, units, mounts, cgroups, dm devices",
           problems)
    assert not problems, "\n".join(problems)
