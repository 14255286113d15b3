"""The full-system tier: one boot of the full-system lab (systemlab.py)
serves the whole tier.
"""
import contextlib
import os

import pytest

import systemlab

ROOT = systemlab.ROOT
RELIABILITY_LOG = os.environ.get("LC_RELIABILITY_LOG", os.path.join(ROOT, ".build/reliability/system.jsonl"))
USERS = ("lcfs1", "lcfs2")  # made by the image script; password "lcfs"
PASSWORD = "lcfs"
MARKER = "/run/loginchroot-session"  # in every root (RootMarker.path)
# Where a session's user writes to the root's own filesystem: /run/lock is
# world-writable and, in a root, a directory of the snapshot (no bind, no
# tmpfs); on the host it is a tmpfs of its own.
ROOT_WRITE = "/run/lock/lc-root-write"


def record(case, tries, held, measured="", problems=()):
    """One row of RELIABILITY.md (scripts/reliability-report.py)."""
    systemlab.record(RELIABILITY_LOG, "system", case, tries, held, measured, problems)


@pytest.fixture(scope="session")
def machine():
    with contextlib.suppress(FileNotFoundError):
        os.unlink(RELIABILITY_LOG)  # this run's rows only
    machine = systemlab.boot()
    print(f"\nfull-system lab: booted to a login prompt and ssh in {machine.boot_seconds:.0f} s")
    yield machine
    machine.stop()


def pam_digests(machine):
    return machine.root("cd /etc/pam.d && sha256sum * | sort")


@pytest.fixture(scope="session")
def installed(machine):
    """The package installed, the store made, the module enabled; and what
    /etc/pam.d held before, for the purge at the end."""
    before = pam_digests(machine)
    systemlab.install_package(machine)
    assert pam_digests(machine) == before, "installing the package must change nothing in /etc/pam.d"
    systemlab.make_store(machine)
    unused = machine.ssh("root", "loginchroot check", check=False)
    assert unused.returncode == 1 and "FAIL  PAM services that use the module" in unused.stdout \
        and "fix: pam-auth-update --enable loginchroot" in unused.stdout, f"check before enabling:\n{unused.stdout}"
    systemlab.enable_module(machine)
    enabled = machine.root("loginchroot check")
    assert "ok    the user manager (systemd-user) gets a root" in enabled and "ok    syslog socket /dev/log" in enabled, enabled
    return before


def host_namespace(machine):
    return machine.root("readlink /proc/1/ns/mnt").strip()
