"""The full-system tier: one boot of the full-system lab (lclab.systemlab)
serves the whole tier.
"""
import contextlib
import os

import pytest

from lclab import systemlab
from lclab.systemlab import pam_digests


@pytest.fixture(scope="session")
def machine():
    with contextlib.suppress(FileNotFoundError):
        os.unlink(systemlab.SYSTEM_RELIABILITY_LOG)  # this run's rows only
    machine = systemlab.boot()
    print(f"\nfull-system lab: booted to a login prompt and ssh in {machine.boot_seconds:.0f} s")
    yield machine
    machine.stop()


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
