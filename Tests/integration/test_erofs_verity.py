"""Erofs generations sealed with fs-verity: on a store whose filesystem has
it, publish seals each image and records its digest beside it
(stable/gen-N.erofs.verity), and nothing mounts an image whose digest
differs from the record or that has lost its seal.

This machine's kernel has no fs-verity; the VM lab's Debian kernel (6.1)
has, and cannot mount erofs from a file either, so there this also runs the
read-only direct-I/O loop device each generation is mounted through
(scripts/lab-test.sh runs this file in the lab's first boot).
"""
import fcntl
import os
import re
import shutil
import struct

import pytest

from lclab.harness import (Store, destroy_store, pamtester, record, run, small_filesystem, write_config,
                           write_service)

HAS_VERITY = os.path.exists("/sys/fs/ext4/features/verity")
pytestmark = pytest.mark.skipif(not HAS_VERITY, reason="this kernel's ext4 has no fs-verity (no /sys/fs/ext4/features/"
                                "verity): the VM lab's Debian kernel runs this (make lab-test, part of make test)")

FS_IOC_ENABLE_VERITY = 0x40806685  # _IOW('f', 133, struct fsverity_enable_arg)
FS_IOC_MEASURE_VERITY = 0xC0046686  # _IOWR('f', 134, struct fsverity_digest)


def seal(path):
    """fs-verity on `path`, SHA-256 over 4096-byte blocks (what publish does)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, struct.pack("=4IQ2IQ11Q", 1, 1, 4096, *[0] * 16))
    finally:
        os.close(fd)


def measure(path):
    """"sha256:HEX" of a sealed file; None for one without fs-verity."""
    fd = os.open(path, os.O_RDONLY)
    try:
        buffer = bytearray(struct.pack("=HH", 0, 64) + bytes(64))
        try:
            fcntl.ioctl(fd, FS_IOC_MEASURE_VERITY, buffer)
        except OSError as error:
            if error.errno == 61:  # ENODATA
                return None
            raise
        size = struct.unpack_from("=HH", buffer)[1]
        return "sha256:" + buffer[4:4 + size].hex()
    finally:
        os.close(fd)


@pytest.fixture
def sealed_store(image_dir):
    """An erofs store on an ext4 made with the verity feature."""
    with small_filesystem(256, verity=True) as base:
        store = Store("overlay-erofs", base)
        write_config(store, "mode = per-session")
        store.cli("init", "--from-dir", image_dir)
        write_service(store)
        try:
            yield store
        finally:
            destroy_store(store)


def generation_mount(store, generation):
    """The source of the host's mount of `generation`, or None."""
    target = os.path.join(store.state, "generations", generation)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                dash = fields.index("-")
                return fields[dash + 2]
    return None


def login(store):
    return pamtester(store, "lctest1", "open_session", "close_session", check=False)


def test_publish_seals_each_image_and_start_refuses_one_that_is_not_what_publish_built(sealed_store, image_dir):
    store = sealed_store
    stable = os.path.join(store.path, "stable")
    image, digest_file = os.path.join(stable, "gen-1.erofs"), os.path.join(stable, "gen-1.erofs.verity")
    problems = []

    # Sealed, recorded, mounted (through a loop device where the kernel
    # cannot mount from the file), and a login works: the controls.
    recorded = open(digest_file).read().strip()
    if not recorded.startswith("sha256:") or measure(image) != recorded:
        problems.append(f"the recorded digest {recorded!r} is not the image's {measure(image)!r}")
    source = generation_mount(store, "gen-1")
    if source is None:
        problems.append("gen-1 is not mounted after init")
    elif source.startswith("/dev/loop"):
        direct = open(f"/sys/block/{os.path.basename(source)}/loop/dio").read().strip()
        if direct != "1":
            problems.append(f"{source} of gen-1 does not read with direct I/O (dio={direct})")
    if login(store).returncode != 0:
        problems.append("the control: a login on the sealed generation failed")
    # A sealed file takes no writes, from root either.
    try:
        open(image, "r+b").close()
        problems.append("root opened the sealed image for writing")
    except OSError:
        pass

    # Another image in its place (made and sealed as publish would), then
    # the same bytes without the seal, then also without the record: start
    # mounts none, a login is refused; the original back, both work again.
    store.cli("stop")
    aside = image + ".original"
    os.rename(image, aside)
    other = os.path.join(store.base, "other")
    os.makedirs(os.path.join(other, "etc"))
    shutil.copy("/etc/hostname", os.path.join(other, "etc", "hostname"))
    run(["mkfs.erofs", "-zlz4hc", image, other])
    seal(image)
    replaced = store.cli("start", check=False)
    if replaced.returncode == 0 or not re.search(r"gen-1\.erofs has fs-verity digest sha256:\w+, but publish recorded "
                                                 + re.escape(recorded), replaced.stdout + replaced.stderr):
        problems.append(f"start with another sealed image in place: {replaced.returncode} {replaced.stdout}{replaced.stderr}")
    os.unlink(image)
    shutil.copyfile(aside, image)  # a copy has no seal
    unsealed = store.cli("start", check=False)
    if unsealed.returncode == 0 or "gen-1.erofs has no fs-verity" not in unsealed.stdout + unsealed.stderr:
        problems.append(f"start with the image's bytes unsealed: {unsealed.returncode} {unsealed.stdout}{unsealed.stderr}")
    # The unsealed bytes with the record gone too: still refused, since the
    # store's filesystem has fs-verity and publish seals every image there.
    record_text = open(digest_file).read()
    os.unlink(digest_file)
    unrecorded = store.cli("start", check=False)
    if unrecorded.returncode == 0 or "gen-1.erofs has no fs-verity seal" not in unrecorded.stdout + unrecorded.stderr:
        problems.append(f"start with the image unsealed and its record gone: {unrecorded.returncode} {unrecorded.stderr}")
    with open(digest_file, "w") as f:
        f.write(record_text)
    if generation_mount(store, "gen-1") is not None or login(store).returncode == 0:
        problems.append("gen-1 was mounted, or a login succeeded, with an image that is not what publish built")
    os.rename(aside, image)
    restored = store.cli("start", check=False)
    if restored.returncode != 0 or login(store).returncode != 0:
        problems.append(f"the control: with the original image back, start or a login failed: {restored.stderr}")

    # A publish killed after the digest was recorded leaves a .tmp and a
    # digest without its image; gc removes both. Two publishes later gc
    # deletes gen-1 (two generations are kept) with its digest.
    killed = store.cli("publish", debug=True, check=False, env={**os.environ, "LOGINCHROOT_TEST_CRASH_AT": "erofs.digest-recorded"})
    left = sorted(os.listdir(stable))
    if killed.returncode != -9 or "gen-2.erofs.verity" not in left:
        problems.append(f"the kill at erofs.digest-recorded did not happen where it should ({killed.returncode}): {left}")
    store.cli("gc")
    published = store.cli("publish").stdout + store.cli("publish").stdout
    store.cli("gc")
    left = sorted(os.listdir(stable))
    if "published gen-2" not in published or "published gen-3" not in published \
            or left != ["gen-2.erofs", "gen-2.erofs.verity", "gen-3.erofs", "gen-3.erofs.verity"]:
        problems.append(f"after the kill, gc, two publishes and gc: {published!r}, stable/ holds {left}")
    for generation in ("gen-2", "gen-3"):
        path = os.path.join(stable, generation + ".erofs")
        if os.path.exists(path) and measure(path) != open(path + ".verity").read().strip():
            problems.append(f"{generation}'s recorded digest is not its image's")
    if login(store).returncode != 0:
        problems.append("the control: a login on gen-3 failed")
    record("erofs with fs-verity: publish seals each image and records its digest; start mounts no image that differs "
           "or lost its seal; a publish killed after recording leaves nothing gc does not remove",
           "overlay-erofs", 1, 1 - bool(problems), [], f"mounted from {source}", problems)
    assert not problems, "\n".join(problems)
