"""The SELinux tier: the full-system lab's labelled variant
(scripts/fullsystem-image.sh DIR selinux) booted with security=selinux,
Debian's default policy; the package installed (with its policy module),
the store made and the module enabled as in Tests/fullsystem.

1. Permissive: the AVC denials of an ssh login with the user manager,
   `su -l` and a console login, without the module and then with it, as
   unique (source type, target type, class, permission) tuples: the module
   must add none.
2. Enforcing (setenforce 1 on the same boot): the same logins work; inside
   the root the session runs in the user's context, and the files the module
   wrote and the image's own carry the labels the policy gives their paths;
   publish labels the next generation; logout leaves nothing; `check`
   names a generation relabelled behind loginchroot's back, and that
   publish mends it.
"""
import contextlib
import os
import re

import pytest

from lclab import systemlab
from lclab.systemlab import MARKER, PASSWORD

RELIABILITY_LOG = os.environ.get("LC_RELIABILITY_LOG", os.path.join(systemlab.ROOT, ".build/reliability/selinux.jsonl"))
DENIAL = re.compile(r"avc:  denied  \{ ([^}]*) \}.* scontext=[^:]*:[^:]*:([^:]*):\S* tcontext=[^:]*:[^:]*:([^:]*):\S* "
                    r"tclass=(\w+)")
USER_CONTEXT = "unconfined_u:unconfined_r:unconfined_t:"  # Debian's default: every login unconfined
# What the module writes into a root, and what the image brings.
LABELLED = ["/etc/passwd", "/etc/group", "/etc/hosts", MARKER, "/bin/bash", "/usr/bin/passwd", "/run/user/1000"]
PROBE = f"tr -d '\\0' < /proc/self/attr/current; echo; id -Z; ls -dZ {' '.join(LABELLED)}; cat {MARKER}"


def record_and_assert(case, measured, problems):
    """One row of RELIABILITY.md (one try, held unless `problems`), then the test's verdict."""
    systemlab.record(RELIABILITY_LOG, "selinux", case, 1, 1 - bool(problems), measured, problems)
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def machine():
    with contextlib.suppress(FileNotFoundError):
        os.unlink(RELIABILITY_LOG)
    machine = systemlab.boot(selinux=True)
    print(f"\nSELinux lab: booted to a login prompt and ssh in {machine.boot_seconds:.0f} s")
    yield machine
    machine.stop()


@pytest.fixture(scope="module")
def without_module(machine):
    """The package and the store, the module not enabled yet: the denials
    of the logins alone (Debian's policy is not silent on its own)."""
    systemlab.install_package(machine)
    systemlab.make_store(machine)
    logins(machine)
    return denials(machine)


def denials(machine):
    """The unique (source, target, class, permission) tuples of this boot's
    AVC denials, from the journal (the kernel's audit records reach it)."""
    found = set()
    for line in machine.root("journalctl -b -q --no-pager -o cat | grep 'avc:  denied' || true").splitlines():
        match = DENIAL.search(line)
        if match:
            permissions, source, target, kind = match.groups()
            found |= {(source, target, kind, permission) for permission in permissions.split()}
    return found


def logins(machine):
    """An ssh login that starts a unit of its user manager, `su -l` from
    root's shell, and a console login through agetty and login; each
    prints its context, labels and marker. Then their roots end."""
    seen = {
        # The user manager joins the root after pam_systemd started it: its
        # bus appears in the root's runtime directory a moment later.
        "ssh": machine.ssh("lcfs1", "for i in $(seq 60); do [ -S $XDG_RUNTIME_DIR/bus ] && break; sleep 1; done; "
                                    "systemctl --user is-system-running --wait >/dev/null; "
                                    f"systemd-run --user --wait -q -P echo user-manager-ran; {PROBE}", check=False),
        "su -l": machine.ssh("root", f"su -l lcfs2 -c '{PROBE}'", check=False),
        "console": systemlab.console_login(machine, "lcfs1", PASSWORD, "id -Z; cat " + MARKER)[0],
    }
    systemlab.roots_after_logout(machine, seconds=90)
    return seen


def label_types(text):
    """{path: type} from `ls -dZ` lines."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].count(":") >= 3:
            found[parts[1]] = parts[0].split(":")[2]
    return found


def policy_types(machine):
    """{path: type} the loaded policy's file contexts give the paths of
    LABELLED (matchpathcon on the host: the policy is the host's)."""
    found = {}
    for line in machine.root(f"matchpathcon {' '.join(LABELLED)}").splitlines():
        path, _, context = line.partition("\t")
        if context.count(":") >= 3:
            found[path.strip()] = context.split(":")[2]
    return found


def session_problems(machine, seen):
    """What is wrong in the logins' outputs: no root (the control), not the
    user's context, a label the policy does not give that path."""
    problems = []
    expected = policy_types(machine)
    if len(expected) != len(LABELLED):
        problems.append(f"matchpathcon answered for {sorted(expected)} only (the control)")
    for name, result in seen.items():
        text = result if isinstance(result, str) else result.stdout + result.stderr
        if "uid=" not in text:
            problems.append(f"{name}: did not land in a root (no marker): {text[-400:]}")
        if USER_CONTEXT not in text:
            problems.append(f"{name}: the session does not run in the user's context: {text[:300]}")
        if name == "ssh" and "user-manager-ran" not in text:
            problems.append(f"ssh: the user manager did not run a unit: {text[-400:]}")
        if name != "console":
            found = label_types(text)
            wrong = {path: (found.get(path), want) for path, want in expected.items()
                     if found.get(path) != want and not (path == "/run/user/1000" and name == "su -l")}
            if wrong:
                problems.append(f"{name}: labels (found, policy's) differ in the root: {wrong}")
    return problems


def test_the_lab_boots_with_selinux_labelled_and_permissive(machine):
    status = machine.root("sestatus; ps -eZ | grep -w sshd | head -1")
    problems = [f"not {what}: {status}" for what in ("enabled", "permissive", "sshd_t")
                if not re.search(rf"\b{what}\b", status)]
    unlabelled = machine.root("find /usr /etc/pam.d /etc/ssh -xdev -context '*unlabeled_t*' | head -5")
    if unlabelled.strip():
        problems.append(f"the disk has unlabelled files: {unlabelled}")
    record_and_assert("SELinux lab: boots with SELinux on, permissive, the disk labelled",
                      f"booted in {machine.boot_seconds:.0f} s", problems)


def test_the_package_loads_its_policy_and_labels_its_paths(machine, without_module):
    shown = machine.root("semodule -l | grep -x loginchroot; "
                         "ls -dZ /usr/sbin/loginchroot /var/lib/loginchroot /var/lib/loginchroot/thin.lock /run/loginchroot; "
                         "systemctl show -p MainPID loginchroot.service >/dev/null; ps -eZ | grep -c loginchroot_t || true")
    types = label_types(shown)
    want = {"/usr/sbin/loginchroot": "loginchroot_exec_t", "/var/lib/loginchroot": "loginchroot_var_lib_t",
            "/var/lib/loginchroot/thin.lock": "loginchroot_var_lib_t", "/run/loginchroot": "loginchroot_runtime_t"}
    problems = []
    if not shown.startswith("loginchroot\n"):
        problems.append(f"semodule does not list the loginchroot module: {shown}")
    problems += [f"{path} is {types.get(path)}, not {kind}" for path, kind in want.items() if types.get(path) != kind]
    record_and_assert("SELinux lab: the package loads its policy module and labels the CLI, the store and the state "
                      "directory", "semodule -l, ls -Z", problems)


def test_permissive_the_module_adds_no_denial_and_sessions_run_in_the_users_context(machine, without_module):
    systemlab.enable_module(machine)
    seen = logins(machine)
    added = sorted(denials(machine) - without_module)
    problems = session_problems(machine, seen)
    if added:
        problems.append(f"{len(added)} denial tuples the module adds: {[' '.join(t) for t in added]}")
    record_and_assert("SELinux lab (permissive): the denials the module adds to ssh with the user manager, su -l and a "
                      "console login; their context and labels in the root",
                      f"{len(without_module)} tuples without the module, {len(added)} added", problems)


def test_enforcing_logins_work_publish_labels_and_logout_leaves_nothing(machine, without_module):
    """Also `check` (one publish serves both: each costs a setfiles of the
    image under emulation): it compares a few paths of the current
    generation with the types the loaded policy gives them, so a generation
    changed behind loginchroot's back (its volume mounted by hand,
    /etc/passwd relabelled) fails it, naming the path, and the publish
    makes a labelled generation current."""
    systemlab.enable_module(machine)
    machine.root("setenforce 1")
    try:
        mode = machine.root("getenforce").strip()
        before = denials(machine)
        seen = logins(machine)
        # What the two SELinux binds give a session: the host's selinuxfs
        # (writable mount) and /etc/selinux (read-only). The user must not
        # switch SELinux off or plant policy files; reading is the control.
        escape = machine.ssh("lcfs1", "cat /sys/fs/selinux/enforce; head -c0 /etc/selinux/config && echo config-readable; "
                             "echo 0 > /sys/fs/selinux/enforce && echo switched-off; "
                             "echo x > /etc/selinux/lc-planted && echo planted; cat /run/loginchroot-session", check=False)
        after_escape = machine.root("getenforce; ls /etc/selinux/lc-planted 2>&1 || true")
        checked = check_before_and_after_a_relabel(machine)
        generation = machine.root("loginchroot publish").strip()
        checked["after publish"] = machine.root("loginchroot check 2>&1; echo status=$?")
        after_publish = machine.ssh("lcfs1", PROBE, check=False)
        left = systemlab.roots_after_logout(machine, seconds=90)
        volumes = machine.root("dmsetup ls | grep -c -- -session- || true").strip()
        new = sorted(denials(machine) - before)
    finally:
        machine.root("setenforce 0")
    problems = [] if mode == "Enforcing" else [f"not enforcing (the control): {mode}"]
    problems += session_problems(machine, {**seen, "ssh after publish": after_publish})
    if not re.match(r"1\s*config-readable", escape.stdout) or "uid=1000" not in escape.stdout:
        problems.append(f"the control: a session in its root cannot read selinuxfs and /etc/selinux: {escape.stdout}{escape.stderr}")
    if "switched-off" in escape.stdout or "planted" in escape.stdout or not after_escape.startswith("Enforcing") \
            or "No such file" not in after_escape:
        problems.append(f"a session switched SELinux off or planted a file in /etc/selinux: {escape.stdout} / {after_escape}")
    if "published" not in generation:
        problems.append(f"publish under enforcing mode failed: {generation}")
    if left != "no open session roots" or volumes != "0":
        problems.append(f"after logout: sessions say {left!r}, {volumes} session volumes")
    if new:
        problems.append(f"{len(new)} denial tuples under enforcing mode: {[' '.join(t) for t in new]}")
    wrong_checks = check_problems(checked)
    systemlab.record(RELIABILITY_LOG, "selinux", "SELinux lab: check names a generation whose labels are wrong; "
                     "publish mends it", 1, 1 - bool(wrong_checks), "", wrong_checks)
    record_and_assert("SELinux lab (enforcing): ssh with the user manager, su -l, console login and publish; the "
                      "user's context, the policy's labels in the root; a session cannot switch SELinux off; logout "
                      "leaves nothing",
                      f"{len(new)} new denial tuples", problems + wrong_checks)


def check_before_and_after_a_relabel(machine):
    """`loginchroot check` on the current generation, then again after its
    /etc/passwd was relabelled shadow_t behind loginchroot's back."""
    checked = {"before": machine.root("loginchroot check 2>&1 || true")}
    generation = machine.root("loginchroot status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"current\"])'").strip()
    device = machine.root(f"dmsetup ls | awk '$1 ~ /-{generation}$/ {{print \"/dev/mapper/\" $1}}'").strip()
    machine.root(f"unshare -m sh -c 'mount {device} /mnt && chcon -t shadow_t /mnt/etc/passwd'")
    checked["relabelled"] = machine.root("loginchroot check 2>&1; echo status=$?")
    return checked


def check_problems(checked):
    problems = []
    for name in ("before", "after publish"):
        text = checked[name]
        if not re.search(r"^ok +SELinux labels of generation", text, re.M) or \
                not re.search(r"^ok +SELinux policy module loginchroot loaded", text, re.M):
            problems.append(f"check {name}: no 'ok' for the policy module and the generation's labels: {text}")
    broken = checked["relabelled"]
    if not re.search(r"FAIL +SELinux labels of generation .*/etc/passwd .*shadow_t", broken) \
            or "fix: loginchroot publish" not in broken or "status=1" not in broken:
        problems.append(f"check does not name the relabelled /etc/passwd: {broken}")
    return problems
