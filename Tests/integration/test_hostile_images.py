"""Images that a broken build or an attacker could hand over: /etc, /tmp,
/home or /etc/group as symlinks that point out of the image, and an image
without the user's login shell. A login into one is refused with the reason
in syslog, and nothing is read or written through a symlink on the host."""
import contextlib
import hashlib
import os
import shutil
import tempfile
import time

import pytest

from lclab import harness
from lclab.harness import BACKENDS, assert_no_residue, destroy_store, make_store, run
from lclab.harness import pamtester


def digest(path):
    """A fingerprint of a file or a directory tree (names, modes, contents)."""
    h = hashlib.sha256()
    for parent, dirs, files in os.walk(path) if os.path.isdir(path) else [(os.path.dirname(path), [], [os.path.basename(path)])]:
        dirs.sort()
        for name in sorted(files + dirs):
            full = os.path.join(parent, name)
            st = os.lstat(full)
            h.update(f"{full} {st.st_mode} {st.st_size}\n".encode())
            if os.path.isfile(full) and not os.path.islink(full):
                h.update(open(full, "rb").read())
    return h.hexdigest()


def syslog_since(offset):
    """The module's syslog lines after `offset`, once syslogd has written them."""
    deadline = time.time() + 10
    while True:
        with open(harness.SYSLOG_FILE, errors="replace") as f:
            f.seek(offset)
            text = f.read()
        if "refusing" in text or time.time() > deadline:
            return text
        time.sleep(0.1)


@pytest.fixture
def canary():
    """A host directory with a file in it, where hostile links point."""
    path = tempfile.mkdtemp(prefix="lc-canary-", dir="/var/lib")
    with open(os.path.join(path, "group"), "w") as f:
        f.write("canary:x:4242:\n")
    yield path
    shutil.rmtree(path)


# case: (path in the image, where its symlink points)
HOSTILE = {
    "tmp-absolute": lambda canary: ("tmp", canary),
    "home-relative": lambda canary: ("home", "../../../../../../.." + canary),
    "etc-absolute": lambda canary: ("etc", canary),
    "etc-group": lambda canary: ("etc/group", os.path.join(canary, "group")),  # the module reads and rewrites it
}


@contextlib.contextmanager
def store_of_altered_image(backend, image_dir, alter):
    """A store whose image is a copy of the test image, changed by alter(path)."""
    image = tempfile.mkdtemp(prefix="lc-hostile-image-", dir="/var/lib")
    store = None
    try:
        run(["cp", "-a", "-T", image_dir, image])
        alter(image)
        store = make_store(backend, image)
        yield store
    finally:
        if store:
            destroy_store(store)
        shutil.rmtree(image, ignore_errors=True)


def refused_login(store):
    """Tries to log lctest1 in, expects a refusal; returns what the module logged."""
    mark = os.path.getsize(harness.SYSLOG_FILE)
    opened = pamtester(store, "lctest1", "open_session", check=False)
    assert opened.returncode != 0 and "contact the administrator" in opened.stdout + opened.stderr
    return syslog_since(mark)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_symlinks_out_of_the_image_never_carry_writes_to_the_host(case, backend, image_dir, canary):
    inside, target = HOSTILE[case](canary)

    def plant_symlink(image):
        run(["rm", "-rf", os.path.join(image, inside)])
        os.symlink(target, os.path.join(image, inside))

    with store_of_altered_image(backend, image_dir, plant_symlink) as store:
        watched = [canary, "/etc/group", "/etc/passwd"]
        before = {path: digest(path) for path in watched}
        logged = refused_login(store)
        with open("/proc/self/mountinfo") as f:
            assert canary not in f.read(), f"{case}: something was mounted on the host through the symlink"
        assert "in the image is a symlink" in logged, "the reason is not in syslog"
        after = {path: digest(path) for path in watched}
        assert before == after, f"{case}: a login wrote through the image's symlink onto the host"
        assert_no_residue(store)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_image_without_the_login_shell_is_refused_with_the_reason(backend, image_dir, users):
    assert users["lctest1"].pw_shell == "/bin/sh"
    with store_of_altered_image(backend, image_dir, lambda image: os.unlink(os.path.join(image, "bin/sh"))) as store:
        assert "the login shell /bin/sh is not in the image" in refused_login(store)
        assert_no_residue(store)
