"""Fleet delivery over OSTree, the build host's half: `loginchroot publish
--export REPO` commits the new generation to an OSTree archive repository,
signed with [fleet] signing_key, the generation's number in the commit's
metadata; a static delta from the previous commit; the branch pruned to
[fleet] keep_commits; the summary signed again. What a login machine pulls
is checked here by ostree itself, pulling over file:// into a repository of
the test's own with the public key (and with another key, which must fail).
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from lclab.harness import destroy_store, make_store, needs_backend, record, run

pytestmark = needs_backend("overlay")
REF = "loginchroot/golden"


class Keys:
    """A GnuPG home of the test's own, with one signing key (no passphrase)."""

    def __init__(self, name):
        self.home = tempfile.mkdtemp(prefix="lc-gpg-", dir="/var/lib")
        os.chmod(self.home, 0o700)
        run(["gpg", "--homedir", self.home, "--batch", "--passphrase", "", "--quick-gen-key", name, "ed25519", "sign",
             "never"])
        colons = run(["gpg", "--homedir", self.home, "--with-colons", "--list-secret-keys"]).stdout
        self.fingerprint = re.search(r"^fpr:+([0-9A-F]+):", colons, re.M).group(1)
        self.public = os.path.join(self.home, "public.asc")
        with open(self.public, "w") as f:
            f.write(run(["gpg", "--homedir", self.home, "--armor", "--export", self.fingerprint]).stdout)

    def remove(self):
        run(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"], check=False)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def keys():
    made = [Keys("loginchroot fleet (test)"), Keys("someone else (test)")]
    yield made
    for key in made:
        key.remove()


@pytest.fixture
def build_host(image_dir, keys):
    """An overlay store (master is a directory: the test plants special
    files in it) whose config names the signing key; the repository path."""
    store = make_store("overlay", image_dir, extra=f"\n[fleet]\nsigning_key = {keys[0].fingerprint}\n"
                                                   f"gpg_home = {keys[0].home}\nkeep_commits = 2\n")
    repository = os.path.join(store.base, "repo")
    yield store, repository
    destroy_store(store)


def ostree(repository, *args, check=True):
    return run(["ostree", args[0], f"--repo={repository}", *args[1:]], check=check)


def export(store, repository, debug=False, env=None):
    result = store.cli("publish", "--export", repository, debug=debug, check=False, env=env)
    match = re.search(r"exported (gen-\d+) to .* as commit (\w+) of ", result.stdout)
    return result, (match.groups() if match else (None, None))


def pull(repository, key, into):
    """A login machine's pull, by ostree alone: gpg-verify and
    gpg-verify-summary on, the public key `key` imported."""
    if not os.path.exists(into):
        ostree(into, "init", "--mode=archive")
        ostree(into, "remote", "add", f"--gpg-import={key.public}", "--set=gpg-verify=true",
               "--set=gpg-verify-summary=true", "fleet", f"file://{repository}")
    return ostree(into, "pull", "fleet", REF, check=False)


def test_publish_export_commits_signed_generations_with_deltas_and_prunes_the_branch(build_host, keys, tmp_path):
    store, repository = build_host
    master = os.path.join(store.path, "master")
    # What a commit cannot or must not carry, beside what it must.
    os.mkfifo(os.path.join(master, "srv", "fifo"))
    os.mknod(os.path.join(master, "srv", "null"), 0o666 | 0o020000, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(os.path.join(master, "srv", "socket"))
    os.mknod(os.path.join(master, "dev", "console"), 0o600 | 0o020000, os.makedev(5, 1))
    with open(os.path.join(master, "dev", "planted"), "w") as f:
        f.write("a file in /dev\n")
    os.symlink("/proc/self/fd", os.path.join(master, "dev", "fd"))
    with open(os.path.join(master, "etc", "fleet"), "w") as f:
        f.write("one\n")
    os.chown(os.path.join(master, "etc", "fleet"), 4321, 4321)
    problems = []

    # ostree commits no device node, FIFO or socket: outside /dev one stops
    # the export, named; what is in /dev stays out without a word.
    refused, _ = export(store, repository)
    named = [path for path in ("/srv/fifo", "/srv/null", "/srv/socket") if path in refused.stderr]
    if refused.returncode == 0 or len(named) != 3 or "/dev/" in refused.stderr or "master run -- rm" not in refused.stderr:
        problems.append(f"an export of a master with special files outside /dev: {refused.returncode} {refused.stderr}")
    for name in ("fifo", "null", "socket"):
        os.unlink(os.path.join(master, "srv", name))
    result, (first, commit1) = export(store, repository)
    if result.returncode != 0 or not commit1:
        pytest.fail(f"publish --export failed: {result.stdout}{result.stderr}\n" + "\n".join(problems))
    generation = ostree(repository, "show", "--print-metadata-key=loginchroot.generation", commit1).stdout.strip()
    if generation != f"'{first[4:]}'":
        problems.append(f"commit {commit1} carries generation {generation!r}, not {first}")
    listing = ostree(repository, "ls", "-R", commit1).stdout
    if not re.search(r"^-00644 4321 4321 +\d+ /etc/fleet$", listing, re.M):
        problems.append(f"/etc/fleet (the control) is not in the commit with its owner: {listing[:2000]}")
    if not re.search(r"^d00755 0 0 +0 /dev$", listing, re.M):
        problems.append("/dev is not in the commit as a directory (a root's mount point for the host's /dev)")
    for path in ("/dev/console", "/dev/planted", "/dev/fd"):
        if re.search(rf" {re.escape(path)}( |$)", listing, re.M):
            problems.append(f"{path} is in the commit")

    client = str(tmp_path / "client")
    pulled = pull(repository, keys[0], client)
    if pulled.returncode != 0:
        problems.append(f"the control: a pull with the signing key's public half failed: {pulled.stderr}")
    stranger = pull(repository, keys[1], str(tmp_path / "stranger"))
    if stranger.returncode == 0 or "signature" not in stranger.stderr.lower():
        problems.append(f"a pull with another key succeeded or failed for another reason: {stranger.stderr}")

    # The next export: a static delta from the first commit.
    with open(os.path.join(master, "etc", "fleet"), "w") as f:
        f.write("two\n")
    _, (second, commit2) = export(store, repository)
    deltas = ostree(repository, "static-delta", "list").stdout
    if not commit2 or f"{commit1}-{commit2}" not in deltas:
        problems.append(f"no static delta {commit1}-{commit2}: {deltas}")

    # Killed after the commit, before its delta and the signed summary: a
    # client still sees the previous commit; the next export mends both.
    killed, _ = export(store, repository, debug=True, env={**os.environ, "LOGINCHROOT_TEST_CRASH_AT": "export.committed"})
    if killed.returncode != -9:
        problems.append(f"the kill at export.committed did not happen ({killed.returncode}): {killed.stderr}")
    pull(repository, keys[0], client)
    seen = ostree(client, "rev-parse", f"fleet:{REF}").stdout.strip()
    if seen != commit2:
        problems.append(f"after a kill before the summary, a client pulled {seen}, not {commit2}")
    _, (fourth, commit4) = export(store, repository)
    pulled = pull(repository, keys[0], client)
    seen = ostree(client, "rev-parse", f"fleet:{REF}").stdout.strip()
    if pulled.returncode != 0 or seen != commit4:
        problems.append(f"after the next export a client pulled {seen} ({pulled.stderr}), not {commit4}")

    # keep_commits = 2: the branch keeps the newest commit and its parent.
    history = ostree(repository, "log", REF).stdout
    kept = re.findall(r"^commit (\w+)", history, re.M)
    if len(kept) != 2 or kept[0] != commit4 or commit1 in kept or ostree(repository, "show", commit1, check=False).returncode == 0:
        problems.append(f"the branch keeps {kept}, and commit {commit1} is still there: {history}")
    record("fleet: publish --export commits signed generations (/dev left out, special files elsewhere refused), a static delta "
           "from each parent, a signed summary, the branch pruned; a kill after the commit is mended by the next export",
           "overlay", 1, 1 - bool(problems), [], f"commits {first}, {second}, {fourth}", problems)
    assert not problems, "\n".join(problems)


def test_an_export_that_cannot_be_signed_publishes_nothing(build_host, image_dir):
    store, repository = build_host
    before = store.cli("status", "--json").stdout
    unsigned = make_store("overlay", image_dir)  # no [fleet] signing_key
    try:
        refused = unsigned.cli("publish", "--export", repository, check=False)
        relative = store.cli("publish", "--export", "repo", check=False)
    finally:
        destroy_store(unsigned)
    assert refused.returncode != 0 and "signing_key is not set" in refused.stderr and "gpg --homedir" in refused.stderr, \
        refused.stderr
    assert relative.returncode != 0 and "is not an absolute path" in relative.stderr, relative.stderr
    assert store.cli("status", "--json").stdout == before, "a refused export published a generation"
    assert not os.path.exists(repository)
    ok, (generation, commit) = export(store, repository)  # the control
    assert ok.returncode == 0 and commit, ok.stderr
    assert subprocess.run(["ostree", "refs", f"--repo={repository}"], capture_output=True, text=True).stdout.split() == [REF]
