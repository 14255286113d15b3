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


def test_a_session_can_neither_change_nor_reach_its_generation(erofs_store, users):
    """The attacks of a session's user on the erofs tier: writes in the root
    never reach the mounted generation; neither the mounts nor the images
    can be reached, from inside the root or by a process of the user on the
    host; a process left behind with its cwd on the lower layer does not
    keep the generation from gc. Each beside a control that must succeed."""
    store = erofs_store
    uid = users["lctest1"].pw_uid
    generation_dir = os.path.join(store.state, "generations", "gen-1")
    image = os.path.join(store.path, "stable", "gen-1.erofs")
    held = HeldSession(store, "lctest1", before="""
echo planted > /srv/scratch/planted
ln -s /run/loginchroot /srv/scratch/to-state
echo inside=$(cat /srv/scratch/planted)
ls /run/loginchroot 2>&1 | head -1
""", after="""
( cd /usr/bin && exec nohup sleep 3011 >/dev/null 2>&1 </dev/null & )
""")
    problems = []
    try:
        held.wait_until_in(store)
        # Control: the root sees its own write.
        inside = run(["nsenter", f"--mount={store.state}/pins/lctest1+{held.proc.pid}", f"--setuid={uid}",
                      f"--setgid={uid}", "cat", "/srv/scratch/planted"], check=False)
        if inside.stdout != "planted\n":
            problems.append(f"control: the root does not see its own write: {inside.stdout}{inside.stderr}")
        if os.path.exists(os.path.join(generation_dir, "srv/scratch/planted")):
            problems.append("a write in the root reached the mounted generation")
        # A process of the user on the host: no way to the mounts or the images.
        for path in (generation_dir, image):
            attempt = run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "cat", path], check=False)
            if attempt.returncode == 0 or "Permission denied" not in attempt.stderr:
                problems.append(f"the user reached {path} from the host: {attempt.returncode} {attempt.stderr}")
        with open(image, "rb") as f:  # control: root reads it
            if f.read(4096) == b"":
                problems.append("control: root cannot read the image")
        # Two publishes while the root stands on gen-1: gc keeps it (control).
        publish(store)
        publish(store)
        if "generation gen-1: removed" in store.cli("gc").stdout or not os.path.isdir(generation_dir):
            problems.append("gc removed the generation a root stands on")
    finally:
        status, output = held.finish()
    if status != 0 or "inside=planted" not in output:
        problems.append(f"the session failed: {output}")
    if "No such file or directory" not in output:
        problems.append(f"inside the root, /run/loginchroot exists: {output}")
    # The process left behind with its cwd on the lower layer is killed at
    # logout, and gc unmounts the generation and deletes its image.
    gc = store.cli("gc").stdout
    if "generation gen-1: removed" not in gc or os.path.exists(image) or os.path.exists(generation_dir):
        problems.append(f"gc kept gen-1 after the logout: {gc}")
    assert_no_residue(store)
    record("erofs: a session writes in its root, looks for the state directory, reads the images from the host, "
           "leaves a process on the lower layer", "overlay-erofs", 5, 5 - min(5, len(problems)), [],
           "writes stay in the upper; /run/loginchroot absent inside; EACCES from the host; gc after logout", problems)
    assert not problems, "\n".join(problems)
