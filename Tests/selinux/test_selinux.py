"""The SELinux tier: the full-system lab's labelled variant
(scripts/fullsystem-image.sh DIR selinux) booted with security=selinux,
permissive, Debian's default policy; the package installed, the store
made and the module enabled as in Tests/fullsystem.

What it measures is what the SELinux issue must bring to zero: the AVC
denials the module adds to an ssh login, `su -l` and the user manager,
against the same logins without it, as unique (source type, target type,
class, permission) tuples; and the context a session runs in inside its
root. Until loginchroot labels its images, ships a policy module and puts
pam_selinux where the user's context is computed, that test is expected to
fail (strict: a pass means the work landed and the test must change).
"""
import contextlib
import os
import re
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fullsystem"))
import systemlab  # noqa: E402

RELIABILITY_LOG = os.environ.get("LC_RELIABILITY_LOG", os.path.join(systemlab.ROOT, ".build/reliability/selinux.jsonl"))
DENIAL = re.compile(r"avc:  denied  \{ ([^}]*) \}.* scontext=[^:]*:[^:]*:([^:]*):\S* tcontext=[^:]*:[^:]*:([^:]*):\S* "
                    r"tclass=(\w+)")


def record(case, tries, held, measured="", problems=()):
    systemlab.record(RELIABILITY_LOG, "selinux", case, tries, held, measured, problems)


@pytest.fixture(scope="module")
def machine():
    with contextlib.suppress(FileNotFoundError):
        os.unlink(RELIABILITY_LOG)
    machine = systemlab.boot(selinux=True)
    print(f"\nSELinux lab: booted to a login prompt and ssh in {machine.boot_seconds:.0f} s")
    yield machine
    machine.stop()


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
    """An ssh login with systemd-run --user, and su -l; then the roots end
    (the user managers stop 10 s after the last logout)."""
    machine.ssh("lcfs1", "systemd-run --user --wait -q -P true; cat /proc/self/attr/current", check=False)
    machine.root("su -l lcfs2 -c 'cat /proc/self/attr/current'", check=False)
    time.sleep(15)


def test_the_lab_boots_with_selinux_labelled_and_permissive(machine):
    status = machine.root("sestatus; ps -eZ | grep -w sshd | head -1")
    problems = [f"not {what}: {status}" for what in ("enabled", "permissive", "sshd_t")
                if not re.search(rf"\b{what}\b", status)]
    unlabelled = machine.root("find /usr /etc/pam.d /etc/ssh -xdev -context '*unlabeled_t*' | head -5")
    if unlabelled.strip():
        problems.append(f"the disk has unlabelled files: {unlabelled}")
    record("SELinux lab: boots with SELinux on, permissive, the disk labelled", 1, 1 - bool(problems),
           f"booted in {machine.boot_seconds:.0f} s", problems)
    assert not problems, "\n".join(problems)


@pytest.mark.xfail(strict=True, reason="the SELinux issue: master is not labelled, no policy module, pam_selinux "
                                       "open runs after the module (doc/research/selinux.md)")
def test_the_module_adds_no_denial_and_a_session_runs_in_the_users_context(machine):
    systemlab.install_package(machine)
    systemlab.make_store(machine)
    logins(machine)
    without = denials(machine)
    systemlab.enable_module(machine)
    context = machine.ssh("lcfs1", "tr -d '\\0' < /proc/self/attr/current; echo; cat /run/loginchroot-session",
                          check=False).stdout
    logins(machine)
    added = sorted(denials(machine) - without)
    problems = []
    if "uid=1000" not in context:
        problems.append(f"the ssh login did not land in a root (the control): {context}")
    if "unconfined_t" not in context:
        problems.append(f"the session in the root does not run in the user's context: {context.splitlines()[:1]}")
    if added:
        problems.append(f"{len(added)} denial tuples the module adds, e.g. {[' '.join(t) for t in added[:8]]}")
    record("SELinux lab (permissive): denials the module adds to ssh, su -l and the user manager; the session's "
           "context", 1, 1 - bool(problems), f"{len(without)} tuples without the module, {len(added)} added", problems)
    assert not problems, "\n".join(problems)
