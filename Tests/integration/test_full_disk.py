"""Full disks on btrfs and overlay (dm-thin's are in test_dmthin_lab.py).

A session fills its root with dd. It must get ENOSPC (no hang, no crash),
another user's open session must keep working (its home, /tmp and the host
are unaffected), the host must keep working, and while the shared space is
below min_free new logins are refused with the reason in syslog. After the
filling session logs out, logins work again and nothing is left.

On btrfs and with a directory upper all roots share the free space, so the
other session's writes into its own root fail too while the space is full
(loginchroot.conf(5), min_free); with a tmpfs upper each root has its own.
"""
import contextlib
import json
import os
import time

import pytest

from lclab import harness
from lclab.harness import (TIME_SCALE, Canaries, HeldSession, c_client, record, run, settled_residue, small_filesystem,
                      syslog_mark, syslog_since, write_config)


FILL = "dd if=/dev/zero of=/srv/scratch/fill bs=1M 2>&1; echo dd-exit=$?"
OTHER_AFTER = ("echo ok > /tmp/lc-full-{t}; echo ok > $HOME/lc-full-{t}; cat /etc/loginchroot-image >/dev/null && "
               "echo other-works")


@pytest.mark.parametrize("store,upper", [("btrfs", "store"), ("overlay", "directory"), ("overlay", "tmpfs")],
                         indirect=["store"])
def test_a_session_that_fills_its_root(store, users, upper):
    with contextlib.ExitStack() as stack:
        upper_path = None
        if upper == "directory":
            if not harness.PROJECT_QUOTAS():
                pytest.skip(harness.NO_PROJECT_QUOTAS)
            upper_path = stack.enter_context(small_filesystem(96, project_quotas=True))
            write_config(store, f"[overlay]\nupper = {upper_path}\n")
        elif upper == "tmpfs":
            write_config(store, "[overlay]\ntmpfs_size = 64M\n")
        shared_space = upper_path if upper == "directory" else store.path
        if upper == "store":
            stack.enter_context(ballast(store.path, leave_mb=160))
        check_full_root(store, users, upper, shared_space)


@contextlib.contextmanager
def ballast(path, leave_mb):
    """Takes all but `leave_mb` of the free space at `path`, so filling the
    rest is quick; the space comes back afterwards."""
    fs = os.statvfs(path)
    size = fs.f_bavail * fs.f_frsize - leave_mb * 2**20
    filler = os.path.join(path, "lc-test-ballast")
    if size > 0:
        run(["fallocate", "-l", str(size), filler])
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(filler)


def check_full_root(store, users, upper, shared_space):
    t = os.urandom(4).hex()
    canaries = Canaries(users["lctest2"].pw_dir)
    problems = []
    other = HeldSession(store, "lctest2", after=OTHER_AFTER.format(t=t))
    try:
        other.wait_until_in(store)
        fill = run([c_client("pamclient"), store.service, "lctest1", "1", FILL], check=False,
                   timeout=600 * TIME_SCALE)
        if "No space left on device" not in fill.stdout or "dd-exit=1" not in fill.stdout:
            problems.append(f"the filling session did not get ENOSPC: {fill.stdout}{fill.stderr}")
        # The filling session has ended: its space comes back.
        with open(f"/var/lib/lc-host-write-{t}", "w") as f:  # the host's own disk
            f.write("host works")
        os.unlink(f"/var/lib/lc-host-write-{t}")
        status, output = other.finish()
        if status != 0 or "other-works" not in output:
            problems.append(f"the other session stopped working: exit {status}: {output}")
        for path in (f"/tmp/lc-full-{t}", os.path.join(users["lctest2"].pw_dir, f"lc-full-{t}")):
            if not os.path.exists(path):
                problems.append(f"the other session's write to {path} was lost")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

        if upper != "tmpfs":
            # A filler that stays: while it holds the space, new logins are refused.
            space_back = space_comes_back(shared_space)
            if space_back:
                problems.append(space_back)
            filler = HeldSession(store, "lctest1", before=FILL)
            try:
                filler.wait_until_in(store)
                refused = refusal_while_full(store)
                if refused:
                    problems.append(refused)
            finally:
                filler.finish()
            space_back = space_comes_back(shared_space)
            if space_back:
                problems.append(space_back)
        login = run(["pamtester", store.service, "lctest2", "open_session", "close_session"], check=False)
        if login.returncode != 0:
            problems.append(f"a login after the filler left failed: {login.stdout}{login.stderr}")
    finally:
        lost = canaries.lost()
        canaries.remove()
    problems += settled_residue(store)
    record(f"a session fills its root ({upper} upper)" if store.backend == "overlay" else "a session fills its root",
           store.backend, 1, 0 if problems else 1, lost,
           "the filler got ENOSPC; another user's session, the host and (when shared space is short) the refusal "
           "of new logins held", problems)
    assert not problems and not lost, "\n".join(problems + lost)


BURST = 800


@pytest.mark.parametrize("store", ["btrfs"], indirect=True)
def test_a_burst_of_logins_after_a_full_disk_is_not_refused_while_btrfs_reclaims(store, users):
    """Filling the store leaves all its space allocated to data, and btrfs
    frees a deleted snapshot's metadata only later, in a kernel thread: a
    quick run of logins and logouts outran it and was refused with ENOSPC
    (seen in the soak, after this file's tests). A login out of space now
    waits for the pending deletions and retries once."""
    with ballast(store.path, leave_mb=16):
        run(["sh", "-c", f"dd if=/dev/zero of={store.path}/lc-test-fill bs=1M 2>/dev/null; sync"], check=False)
        os.unlink(f"{store.path}/lc-test-fill")
    slow = space_comes_back(store.path)
    assert not slow, slow
    mark = syslog_mark()
    result = run([c_client("pamclient"), store.service, "lctest1", str(BURST), ""], check=False, timeout=60 * 60)
    assert result.stdout.strip(), f"pamclient printed nothing: {result.stderr[-1500:]}"
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    logged = syslog_since(mark)
    retries = "unknown (the machine's own syslog)" if logged is None else logged.count("retrying after the store reclaimed")
    problems = [f"{stats['failed']} of {BURST} logins were refused: {result.stderr[-1500:]}"] if stats["failed"] else []
    problems += settled_residue(store)
    record("a burst of logins and logouts right after the store was full", store.backend, BURST,
           BURST - stats["failed"], [], f"logins that waited for btrfs to reclaim removed roots, then got in: {retries}", problems)
    assert not problems, "\n".join(problems)


def space_comes_back(path):
    """Why the space a logout freed did not come back within a minute, or
    None. (btrfs frees a deleted snapshot's blocks in the background.)"""
    for _ in range(600):
        fs = os.statvfs(path)
        if fs.f_bavail * 100 // fs.f_blocks >= 10:
            return None
        os.sync()  # a btrfs commit wakes its cleaner
        time.sleep(0.1)
    return f"{path} is still below min_free a minute after the filling session ended"


def refusal_while_full(store):
    """Why the refusal of a new login while the space is full failed, or None."""
    mark = syslog_mark()
    for _ in range(100 * TIME_SCALE):  # the filler may still be writing its last blocks
        login = run(["pamtester", store.service, "lctest2", "open_session", "close_session"], check=False)
        if login.returncode != 0:
            break
        run(["sleep", "0.1"])
    else:
        return "new logins were not refused while the space was full"
    logged = syslog_since(mark, waiting_for="below min_free 10%")
    if logged is not None and "below min_free 10%" not in logged:
        return "the refusal's reason (below min_free) is not in syslog"
    return None

