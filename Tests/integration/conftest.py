"""Privileged integration tests: real stores on loop files, real mounts and
real PAM clients (pamtester, su, runuser, login on a pty, sshd, and a
multithreaded client). Run as root through `make test`. The harness they
share with the VM lab and bench/ is Tests/lclab/harness.py; here are only
pytest's hooks and the fixtures.

Every fixture undoes what it did, even when a test fails.
"""
import os
import shutil
import tempfile

import pytest

from lclab import harness
from lclab.harness import (BACKENDS, RELIABILITY_LOG, ROOT, USERS, destroy_store, make_store, module_errors,
                           private_syslog, run, services_for, settled_residue, syslog_mark, temporary_users,
                           write_config, write_service)


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("the integration tests need root (run them through `make test` as root)", returncode=2)
    if "LC_RELIABILITY_LOG" not in os.environ and os.path.exists(RELIABILITY_LOG):
        os.unlink(RELIABILITY_LOG)  # this run's rows only


@pytest.fixture(scope="session", autouse=True)
def syslog():
    """A syslog socket, so the module's pam_syslog lines can be read back."""
    with private_syslog() as harness.SYSLOG_FILE:
        yield harness.SYSLOG_FILE


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.syslog_start = syslog_mark()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report ends with the module's syslog: the user only
    sees "contact the administrator", the reason is there. Every error the
    test's own run logged comes first (with many sessions at once the
    reason is rarely among the last lines), then the latest lines."""
    report = (yield).get_result()
    if report.failed and harness.SYSLOG_FILE and os.path.exists(harness.SYSLOG_FILE):
        with open(harness.SYSLOG_FILE, errors="replace") as log:
            log.seek(getattr(item, "syslog_start", 0))
            lines = [line for line in log if "loginchroot" in line]
        report.sections.append(("module syslog: errors during this test", "".join(module_errors(lines)[:40]) or "none\n"))
        report.sections.append(("module syslog (last lines)", "".join(lines[-15:])))


@pytest.fixture(scope="session", autouse=True)
def users():
    with temporary_users(USERS) as accounts:
        yield accounts


@pytest.fixture(scope="session")
def image_dir():
    if os.environ.get("LC_IMAGE_DIR"):  # made on the host by the VM lab: process spawns are slow in there
        yield os.environ["LC_IMAGE_DIR"]
        return
    path = tempfile.mkdtemp(prefix="lc-image-", dir="/var/lib")
    run(["sh", os.path.join(ROOT, "scripts/make-image.sh"), path])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def idle_stores():
    """Stores that a test left clean, by backend, for the next test."""
    idle = {}
    yield idle
    for store in idle.values():
        destroy_store(store)


@pytest.fixture(params=BACKENDS)
def store(request, image_dir, idle_stores):
    """A published store. Making one costs most of a test under emulation
    (the VM lab), so a store comes back for the next test once gc has run
    and it is proved clean; a test that leaves residue gets an error here
    and its store is destroyed."""
    store = idle_stores.pop(request.param, None) or make_store(request.param, image_dir)
    yield store
    write_config(store)  # what tests may have changed
    write_service(store)
    store.cli("gc", check=False)
    problems = settled_residue(store)
    if problems:
        destroy_store(store)
        pytest.fail("the test left residue that gc did not reclaim:\n" + "\n".join(problems))
    idle_stores[request.param] = store


@pytest.fixture
def system_services(store):
    with services_for(store):
        yield
