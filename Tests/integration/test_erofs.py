"""Erofs generations ([overlay] lower = erofs): each generation is an image
file mounted once, where every root of it takes the mount as its lower
layer. `make test` runs this file with LC_BACKENDS=overlay-erofs, after the
conformance suite on such a store (see the Makefile's integration-test).
"""
import json
import os
import re

import pytest

from lclab.harness import (HeldSession, assert_no_residue, destroy_store, make_store, needs_backend, record, run,
                           wait_until_in)

pytestmark = needs_backend("overlay-erofs")

SESSIONS = 100  # roots held open on one generation
READERS = 10  # of them read the same large file
BIG_MB = 64


@pytest.fixture
def erofs_store(image_dir):
    """A store of its own: per-session roots, one generation kept besides
    the current one."""
    store = make_store("overlay-erofs", image_dir, extra="mode = per-session")
    yield store
    destroy_store(store)


def erofs_mounts(store):
    """The host's erofs mounts of this store's images: (source, mount point)."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    found = []
    for fields in mounts:
        dash = fields.index("-")
        if fields[dash + 1] == "erofs" and fields[4].startswith(os.path.join(store.state, "generations") + "/"):
            found.append((fields[dash + 2], fields[4]))
    return sorted(found)


def cached_kib():
    with open("/proc/meminfo") as f:
        return int(re.search(r"^Cached:\s+(\d+) kB", f.read(), re.M).group(1))


def publish(store, megabytes=0):
    """Publishes master with a new /srv/big of random bytes (lz4hc cannot
    shrink them); master is a directory in the store."""
    with open(os.path.join(store.path, "master", "srv", "big"), "wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1 << 20))
    out = store.cli("publish").stdout
    return re.search(r"published (gen-\d+)", out).group(1)


def test_roots_of_one_generation_share_one_mount_and_one_page_cache(erofs_store):
    store = erofs_store
    generation = publish(store, BIG_MB)
    image = os.path.join(store.path, "stable", f"{generation}.erofs")
    assert os.path.isfile(image), os.listdir(os.path.join(store.path, "stable"))
    held = [HeldSession(store, "lctest1") for _ in range(SESSIONS)]
    problems = []
    grown = 0
    try:
        wait_until_in(store, held)
        roots = [root["key"] for root in json.loads(store.cli("sessions", "--json").stdout)]
        if len(roots) != SESSIONS:
            problems.append(f"{len(roots)} roots for {SESSIONS} per-session logins")
        mounts = [m for m in erofs_mounts(store) if m[1].endswith("/" + generation)]
        if len(mounts) != 1:
            problems.append(f"{len(mounts)} erofs mounts of {generation} on the host with {SESSIONS} roots on it: {mounts}")
        # Each root reads the file through its own overlay, all on that mount.
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        before = cached_kib()
        for key in roots[:READERS]:
            run(["nsenter", f"--mount={store.state}/pins/{key}", "sh", "-c", "cat /srv/big > /dev/null"])
        grown = cached_kib() - before
        big = BIG_MB * 1024
        # The control: the file was read into the cache at all.
        if grown < big * 8 // 10:
            problems.append(f"the page cache grew by {grown} KiB only, less than the {big} KiB file: nothing was read?")
        if grown >= 2 * big:  # once, not once per root (and not twice: the image's pages beside the files')
            problems.append(f"{READERS} roots reading one {BIG_MB} MiB file grew the page cache by {grown} KiB")
    finally:
        results = [session.finish() for session in held]
    failed = [output for status, output in results if status != 0]
    if failed:
        problems.append(f"{len(failed)} held sessions failed: {failed[0]}")
    assert_no_residue(store)
    record(f"erofs: {SESSIONS} roots on one generation, {READERS} of them read one {BIG_MB} MiB file",
           "overlay-erofs", 1, 1 - bool(problems), [],
           f"one erofs mount; page cache grew by {grown // 1024} MiB for {READERS} reads", problems)
    assert not problems, "\n".join(problems)


def test_start_mounts_the_kept_generations_and_gc_unmounts_what_no_root_uses(erofs_store):
    store = erofs_store
    first = "gen-1"
    second = publish(store)
    assert [m[1].rsplit("/", 1)[1] for m in erofs_mounts(store)] == [first, second]
    # After a boot /run is empty: nothing is mounted, and a login says so.
    for _, mount_point in erofs_mounts(store):
        run(["umount", mount_point])
    refused = run(["pamtester", store.service, "lctest1", "open_session", "close_session"], check=False)
    assert refused.returncode != 0, "a login without its generation mounted must be refused"
    store.cli("start")
    assert [m[1].rsplit("/", 1)[1] for m in erofs_mounts(store)] == [first, second], "start mounts every kept generation"
    run(["pamtester", store.service, "lctest1", "open_session", "close_session"])  # the control
    # A root on the second generation keeps it through two more publishes;
    # gc unmounts and deletes the first at once, the second after logout.
    held = HeldSession(store, "lctest1")
    try:
        held.wait_until_in(store)
        third = publish(store)
        fourth = publish(store)
        gc = store.cli("gc").stdout
        assert f"generation {first}: removed" in gc and f"generation {second}: removed" not in gc, gc
        assert not os.path.exists(os.path.join(store.path, "stable", f"{first}.erofs"))
        assert [m[1].rsplit("/", 1)[1] for m in erofs_mounts(store)] == [second, third, fourth]
    finally:
        status, output = held.finish()
    assert status == 0, output
    gc = store.cli("gc").stdout
    assert f"generation {second}: removed" in gc, gc
    kept = [m[1].rsplit("/", 1)[1] for m in erofs_mounts(store)]
    assert second not in kept and fourth in kept, kept
    assert sorted(os.listdir(os.path.join(store.path, "stable"))) == sorted(f"{g}.erofs" for g in kept)
    assert_no_residue(store)


def test_stop_unmounts_every_generation_and_start_brings_them_back(erofs_store):
    store = erofs_store
    stopped = store.cli("stop").stdout
    assert "erofs generation(s) unmounted" in stopped and erofs_mounts(store) == [], stopped
    store.cli("start")
    assert len(erofs_mounts(store)) == 1
    run(["pamtester", store.service, "lctest1", "open_session", "close_session"])
