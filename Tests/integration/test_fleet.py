"""Fleet delivery over OSTree. The build host's half: `loginchroot publish
--export REPO` commits the new generation to an OSTree archive repository,
signed with [fleet] signing_key, the generation's number in the commit's
metadata; a static delta from the previous commit; the branch pruned to
[fleet] keep_commits; the summary signed again. What a login machine pulls
is checked here by ostree itself, pulling over file:// into a repository of
the test's own with the public key (and with another key, which must fail).

The login machines' half: `loginchroot update --pull` on two login stores
(generations as directories and as erofs images), the repository served on 127.0.0.1 inside a network namespace of the test's
own (lclab/fleet.py): a first pull that a login then sees, an update that
travels as a static delta, refusals that change nothing (a flipped byte in
an object, another key, a summary signed by another key, an unsigned
commit, a replayed older commit), HTTP errors and a server that
dies mid-pull, two stores pulling at once, a session that keeps its
generation through a pull, and a kill at each step of a pull.
"""
import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess

import pytest

from lclab.fleet import Keys, RepoServer, network_namespace, ostree, pull
from lclab.harness import CLI, DEBUG_CLI, HeldSession, destroy_store, make_store, needs_backend, record, run

pytestmark = needs_backend("overlay")
REF = "loginchroot/golden"


@pytest.fixture(scope="module")
def keys():
    made = []
    try:
        for name in ("loginchroot fleet (test)", "someone else (test)"):
            made.append(Keys(name))
        yield made
    finally:
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


def export(store, repository, debug=False, env=None):
    result = store.cli("publish", "--export", repository, debug=debug, check=False, env=env)
    match = re.search(r"exported (gen-\d+) to .* as commit (\w+) of ", result.stdout)
    return result, (match.groups() if match else (None, None))


def ostree_pull(repository, key, into):
    """A login machine's pull, by ostree alone: gpg-verify and
    gpg-verify-summary on, the public key `key` imported."""
    if not os.path.exists(into):
        ostree(into, "init", "--mode=archive")
        ostree(into, "remote", "add", f"--gpg-import={key.public}", "--set=gpg-verify=true",
               "--set=gpg-verify-summary=true", "fleet", f"file://{repository}")
    return ostree(into, "pull", "fleet", REF, check=False)


def processes():
    """{pid: (name, mount namespace)} of the processes that stay long enough to be read."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found[pid] = (open(f"/proc/{pid}/comm").read().strip(), os.readlink(f"/proc/{pid}/ns/mnt"))
        except OSError:
            pass  # gone
    return found


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
    # No gpg-agent running: the export's gpg starts one, which must not
    # live in the namespace the generation was mounted in.
    run(["gpgconf", "--homedir", keys[0].home, "--kill", "gpg-agent"])
    result, (first, commit1) = export(store, repository)
    agents = {pid: namespace for pid, (name, namespace) in processes().items() if name == "gpg-agent"}
    elsewhere = [pid for pid, namespace in agents.items() if namespace != os.readlink("/proc/self/ns/mnt")]
    if not agents or elsewhere:
        problems.append(f"gpg-agents {agents}; in another mount namespace: {elsewhere} (the control: one runs)")
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
    pulled = ostree_pull(repository, keys[0], client)
    if pulled.returncode != 0:
        problems.append(f"the control: a pull with the signing key's public half failed: {pulled.stderr}")
    stranger = ostree_pull(repository, keys[1], str(tmp_path / "stranger"))
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
    ostree_pull(repository, keys[0], client)
    seen = ostree(client, "rev-parse", f"fleet:{REF}").stdout.strip()
    if seen != commit2:
        problems.append(f"after a kill before the summary, a client pulled {seen}, not {commit2}")
    _, (fourth, commit4) = export(store, repository)
    pulled = ostree_pull(repository, keys[0], client)
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
    generations = lambda: {key: json.loads(store.cli("status", "--json").stdout)[key] for key in ("current", "generations")}
    before = generations()
    unsigned = make_store("overlay", image_dir)  # no [fleet] signing_key
    try:
        refused = unsigned.cli("publish", "--export", repository, check=False)
        relative = store.cli("publish", "--export", "repo", check=False)
    finally:
        destroy_store(unsigned)
    assert refused.returncode != 0 and "signing_key is not set" in refused.stderr and "gpg --homedir" in refused.stderr, \
        refused.stderr
    assert relative.returncode != 0 and "is not an absolute path" in relative.stderr, relative.stderr
    assert generations() == before, "a refused export published a generation"
    assert not os.path.exists(repository)
    ok, (generation, commit) = export(store, repository)  # the control
    assert ok.returncode == 0 and commit, ok.stderr
    assert subprocess.run(["ostree", "refs", f"--repo={repository}"], capture_output=True, text=True).stdout.split() == [REF]


class Fleet:
    """The build host's store and repository, its web server in a network
    namespace, and two login stores that pull from it."""

    def __init__(self, build_host, repository, keys, netns, server, machines):
        self.build_host, self.repository, self.keys, self.netns, self.server, self.machines = \
            build_host, repository, keys, netns, server, machines

    def export(self, text):
        """Master's /etc/fleet says `text`; published and exported."""
        with open(os.path.join(self.build_host.path, "master", "etc", "fleet"), "w") as f:
            f.write(text + "\n")
        result, (_, commit) = export(self.build_host, self.repository)
        assert result.returncode == 0 and commit, result.stderr
        return commit

    def pull(self, machine, debug=False, env=None):
        return pull(self.netns, DEBUG_CLI if debug else CLI, machine, env=env)


def login_machine(image_dir, url, keyring, attempts, backend="overlay"):
    return make_store(backend, image_dir, extra=f"\n[fleet]\nurl = {url}\nkeyring = {keyring}\npull_attempts = {attempts}\n")


def current(store):
    return json.loads(store.cli("status", "--json").stdout)["current"]


def seen_by_a_login(store, user="lctest1"):
    """What /etc/fleet says in a new root of `store`."""
    session = HeldSession(store, user, before="cat /etc/fleet 2>&1")
    session.wait_until_in(store)
    status, output = session.finish()
    assert status == 0, output
    return "\n".join(line for line in output.splitlines() if not line.startswith('{"cycles"')).strip()


@pytest.fixture
def fleet(build_host, keys, image_dir, tmp_path):
    store, repository = build_host
    with network_namespace() as netns:
        server = RepoServer(netns, repository, str(tmp_path / "requests.jsonl"))
        machines = []
        try:
            # The second publishes each pulled commit as an erofs generation.
            for backend in ("overlay", "overlay-erofs"):
                machines.append(login_machine(image_dir, server.url, keys[0].public, 4, backend))
            server.start()
            yield Fleet(store, repository, keys[0], netns, server, machines)
        finally:
            server.stop()
            for machine in machines:
                destroy_store(machine)


def test_login_machines_pull_the_signed_commit_the_next_one_as_a_static_delta_and_a_rollback(fleet):
    with open(os.path.join(fleet.build_host.path, "master", "srv", "bulk"), "wb") as f:
        f.write(os.urandom(2 << 20))  # what the second commit does not change
    first = fleet.export("one")
    a, b = fleet.machines
    problems = []
    pulled = fleet.pull(a)
    if pulled.returncode != 0 or f"pulled commit {first}" not in pulled.stdout or current(a) != "gen-2":
        problems.append(f"the first pull: {pulled.returncode} {pulled.stdout}{pulled.stderr}")
    elif seen_by_a_login(a) != "one":
        problems.append(f"a login after the first pull sees {seen_by_a_login(a)!r}, not 'one'")
    again = fleet.pull(a)
    if again.returncode != 0 or "up to date: gen-2" not in again.stdout or current(a) != "gen-2":
        problems.append(f"a pull with nothing new published something: {again.stdout}{again.stderr}")

    # The next commit: machine a has the previous one and fetches the
    # static delta; machine b, which has nothing, fetches every object.
    second = fleet.export("two")
    before = len(fleet.server.requests())
    fleet.pull(a)
    by_delta = fleet.server.requests()[before:]
    before = len(fleet.server.requests())
    fleet.pull(b)
    by_objects = fleet.server.requests()[before:]
    delta_bytes, object_bytes = (sum(r["bytes"] for r in got) for got in (by_delta, by_objects))
    if not any(r["path"].startswith("/deltas/") for r in by_delta) or delta_bytes * 2 > object_bytes:
        problems.append(f"the update moved {delta_bytes} bytes ({[r['path'] for r in by_delta][:8]}), "
                        f"a fresh pull {object_bytes}: no static delta used, or it saved nothing")
    for machine, generation in ((a, "gen-3"), (b, "gen-2")):
        if current(machine) != generation or seen_by_a_login(machine) != "two":
            problems.append(f"after the second commit {second}, {machine.base} is at {current(machine)}")

    # A rollback as the README gives it: the first commit's tree committed
    # again on the branch, signed, and the summary signed again.
    keys = fleet.keys
    ostree(fleet.repository, "commit", f"--branch={REF}", f"--tree=ref={first}", "--subject=rollback",
           f"--gpg-sign={keys.fingerprint}", f"--gpg-homedir={keys.home}")
    ostree(fleet.repository, "summary", "--update", f"--gpg-sign={keys.fingerprint}", f"--gpg-homedir={keys.home}")
    rolled = fleet.pull(a)
    if rolled.returncode != 0 or current(a) != "gen-4" or seen_by_a_login(a) != "one":
        problems.append(f"the rollback to {first}: {rolled.stdout}{rolled.stderr}, current {current(a)}")
    record("fleet: update --pull publishes the signed commit, a login sees it; the next commit travels as a static "
           "delta; a rollback (the first commit's tree committed again) reaches the next login", "overlay", 1, 1 - bool(problems), [],
           f"update by delta {delta_bytes} bytes, by objects {object_bytes} bytes", problems)
    assert not problems, "\n".join(problems)


def flip_a_byte(repository):
    """Flips one byte in the middle of the largest file object; returns how to undo it."""
    objects = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(repository, "objects")) for n in names
               if n.endswith(".filez")]
    path = max(objects, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))

    def undo():
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            f.write(byte)
    return undo


def test_bad_objects_keys_signatures_and_replays_are_refused_and_change_nothing(fleet, keys, image_dir):
    a, _ = fleet.machines
    with open(a.config) as f:  # a refusal is final: one attempt each (the retries are the next test's)
        text = f.read()
    with open(a.config, "w") as f:
        f.write(text.replace("pull_attempts = 4", "pull_attempts = 1"))
    fleet.export("one")
    snapshot = os.path.join(fleet.build_host.base, "repo-then")
    shutil.copytree(fleet.repository, snapshot, symlinks=True)
    problems = []
    undo = flip_a_byte(fleet.repository)
    corrupt = fleet.pull(a)
    if corrupt.returncode == 0 or current(a) != "gen-1":
        problems.append(f"a pull of a corrupt object: {corrupt.returncode}, current {current(a)}: {corrupt.stdout}")
    undo()
    mended = fleet.pull(a)
    if mended.returncode != 0 or current(a) != "gen-2":
        problems.append(f"the control: with the byte back the pull failed: {mended.stderr}")

    stranger = login_machine(image_dir, fleet.server.url, keys[1].public, 1)
    try:
        refused = fleet.pull(stranger)
        if refused.returncode == 0 or current(stranger) != "gen-1" or "signature" not in refused.stderr.lower():
            problems.append(f"a pull trusting another key: {refused.returncode}, current {current(stranger)}: {refused.stderr}")
    finally:
        destroy_store(stranger)

    # A summary signed with another key only, then with the right one again (the control).
    sign_summary = lambda key: ostree(fleet.repository, "summary", "--update", f"--gpg-sign={key.fingerprint}",
                                      f"--gpg-homedir={key.home}")
    sign_summary(keys[1])
    forged = fleet.pull(a)
    if forged.returncode == 0 or current(a) != "gen-2":
        problems.append(f"a pull of a summary signed with another key: {forged.returncode}, current {current(a)}")
    sign_summary(keys[0])
    if "up to date: gen-2" not in fleet.pull(a).stdout:
        problems.append("the control: with the summary signed again, the pull did not find gen-2 up to date")

    # A commit on the branch that nobody signed (the summary is signed).
    tree = os.path.join(fleet.build_host.base, "unsigned")
    os.makedirs(os.path.join(tree, "etc"))
    ostree(fleet.repository, "commit", f"--branch={REF}", f"--tree=dir={tree}", "--subject=unsigned")
    ostree(fleet.repository, "summary", "--update", f"--gpg-sign={keys[0].fingerprint}", f"--gpg-homedir={keys[0].home}")
    unsigned = fleet.pull(a)
    if unsigned.returncode == 0 or current(a) != "gen-2" or "signature" not in unsigned.stderr.lower():
        problems.append(f"a pull of an unsigned commit: {unsigned.returncode}, current {current(a)}: {unsigned.stderr}")
    if seen_by_a_login(a) != "one":
        problems.append("after the refusals a login does not see the last good commit")

    # A replay: the repository as it was at the first commit (signed, all
    # of it), served after a newer commit was pulled.
    fleet.export("two")
    if fleet.pull(a).returncode != 0 or current(a) != "gen-3":
        problems.append("the control: the commit after the refusals was not published")
    fleet.server.directory = snapshot
    fleet.server.start()
    replayed = fleet.pull(a)
    fleet.server.directory = fleet.repository
    fleet.server.start()
    if replayed.returncode == 0 or current(a) != "gen-3" or seen_by_a_login(a) != "two":
        problems.append(f"a replayed older commit: {replayed.returncode}, current {current(a)}: {replayed.stdout}")
    record("fleet: a flipped byte in an object, another key, a summary signed by another key, an unsigned commit and "
           "a replayed older commit are refused; current stays",
           "overlay", 1, 1 - bool(problems), [], "", problems)
    assert not problems, "\n".join(problems)


@contextlib.contextmanager
def background_pull(fleet, machine):
    """`update --pull` of `machine` running while the block runs; killed if
    it is still running when the block ends."""
    process = subprocess.Popen(["nsenter", f"--net={fleet.netns}", CLI, "update", "--pull", "--config", machine.config],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_http_errors_a_server_dying_mid_pull_and_two_stores_at_once(fleet):
    a, b = fleet.machines
    first = fleet.export("one")
    problems = []
    fleet.server.start("--fail-first", "3")
    erring = fleet.pull(a)
    if erring.returncode != 0 or current(a) != "gen-2":
        problems.append(f"a pull through three 503s did not finish: {erring.stderr}")
    # The server dies in the middle of its fifth answer; the pull's next
    # attempt (after a pause) finds it started again.
    fleet.server.start("--die-after", "5")
    with background_pull(fleet, b) as dying:
        fleet.server.process.wait(timeout=120)
        fleet.server.start()
        out, err = dying.communicate(timeout=300)
    if dying.returncode != 0 or current(b) != "gen-2" or "pull attempt 1 of 4 failed" not in err:
        problems.append(f"a pull whose server died mid-answer: {dying.returncode}, current {current(b)}: {out}{err}")
    # Both at once, on the next commit.
    second = fleet.export("two")
    with background_pull(fleet, a) as first_pull, background_pull(fleet, b) as second_pull:
        results = [p.communicate(timeout=300) + (p.returncode,) for p in (first_pull, second_pull)]
    if any(code != 0 or f"pulled commit {second}" not in out for out, _, code in results):
        problems.append(f"two stores pulling at once: {results}")
    if [current(a), current(b)] != ["gen-3", "gen-3"] or first == second:
        problems.append(f"after pulling at once the stores are at {current(a)}, {current(b)}")
    record("fleet: update --pull through HTTP errors, a server that dies mid-answer, two stores at once",
           "overlay", 1, 1 - bool(problems), [], "", problems)
    assert not problems, "\n".join(problems)


def test_a_session_keeps_its_generation_through_a_pull_and_a_kill_at_each_step_leaves_nothing_half(fleet):
    a, b = fleet.machines
    fleet.export("one")
    assert fleet.pull(a).returncode == 0
    problems = []
    held = HeldSession(a, "lctest1", before="cat /etc/fleet", after="cat /etc/fleet")
    try:
        held.wait_until_in(a)
        fleet.export("two")
        pulled = fleet.pull(a)
        if pulled.returncode != 0 or seen_by_a_login(a, "lctest2") != "two":
            problems.append(f"a new login after the pull does not see the new commit: {pulled.stderr}")
    finally:
        status, output = held.finish()
    if status != 0 or output.split()[:2] != ["one", "one"]:
        problems.append(f"a session open through the pull saw {output!r}, not its own generation's 'one' twice")

    # A kill at each step of a pull, on both stores; `start` then leaves no
    # half generation, and the next pull publishes the commit.
    steps = [(a, step) for step in ("pull.fetched", "pull.checked-out", "publish.snapshot-made", "publish.renamed")] \
        + [(b, step) for step in ("pull.checked-out", "publish.renamed", "erofs.mounted")]
    for machine, step in steps:
        fleet.export(f"at {step}")
        before = current(machine)
        killed = fleet.pull(machine, debug=True, env={**os.environ, "LOGINCHROOT_TEST_CRASH_AT": step})
        machine.cli("start")
        stable = os.listdir(os.path.join(machine.path, "stable"))
        newest = max((name.removesuffix(".erofs") for name in stable if re.fullmatch(r"gen-\d+(\.erofs)?", name)),
                     key=lambda name: int(name[4:]))
        if killed.returncode != -9 or any(name.endswith(".tmp") for name in stable) or current(machine) not in (before, newest):
            problems.append(f"killed at {step} ({killed.returncode}): current {current(machine)}, stable/ {stable}")
        again = fleet.pull(machine)
        if again.returncode != 0 or seen_by_a_login(machine) != f"at {step}":
            problems.append(f"after the kill at {step} the next pull: {again.stdout}{again.stderr}")
    record("fleet: a session keeps its generation through a pull; a kill at each step of a pull (directory and erofs "
           "generations) leaves no half generation after start, and the next pull publishes", "overlay", 1,
           1 - bool(problems), [], "", problems)
    assert not problems, "\n".join(problems)


def object_inodes(machine):
    """The inodes of the file objects in `machine`'s fleet repository."""
    objects = os.path.join(machine.path, "fleet", "objects")
    return {os.lstat(os.path.join(d, n)).st_ino for d, _, names in os.walk(objects) for n in names if n.endswith(".file")}


def test_a_pulled_commit_is_hardlinked_into_its_generation_and_master_catches_up_before_a_local_change(fleet):
    """A directory lower's generation is the commit checked out with
    hardlinks to the repository's objects, master untouched; an erofs
    generation is built from such a tree (removed after). Before master is
    changed here, it is filled with the deployed commit (copies: the
    objects stay as they are, which ostree fsck proves); a kill in the
    middle of that is mended by the next change."""
    a, b = fleet.machines
    fleet.export("one")
    problems = []
    for machine in (a, b):
        pulled = fleet.pull(machine)
        if pulled.returncode != 0 or seen_by_a_login(machine) != "one":
            problems.append(f"the pull into {machine.backend}: {pulled.stdout}{pulled.stderr}")
    generation = os.path.join(a.path, "stable", current(a))
    shared = os.stat(os.path.join(generation, "etc", "fleet"))
    if shared.st_nlink < 2 or shared.st_ino not in object_inodes(a):
        problems.append(f"{generation}/etc/fleet (links {shared.st_nlink}) is not a hardlink to an object of the repository")
    if os.path.exists(os.path.join(a.path, "master", "etc", "fleet")):
        problems.append("the pull wrote master")
    if any(name.endswith(".tmp") for name in os.listdir(os.path.join(b.path, "stable"))):
        problems.append(f"the erofs store kept its checkout: {os.listdir(os.path.join(b.path, 'stable'))}")

    # A local change: master is filled with the fleet's commit first. A
    # kill just after master was emptied is mended by the next change.
    killed = a.cli("master", "run", "--", "true", debug=True, check=False,
                   env={**os.environ, "LOGINCHROOT_TEST_CRASH_AT": "pull.master-emptied"})
    if killed.returncode != -9:
        problems.append(f"the kill at pull.master-emptied did not happen: {killed.returncode} {killed.stderr}")
    changed = a.cli("master", "run", "--", "sh", "-c", "echo local >> /etc/fleet", check=False)
    if changed.returncode != 0 or "filled with the fleet's commit" not in changed.stderr:
        problems.append(f"master run after a pull: {changed.returncode} {changed.stderr}")
    a.cli("publish")
    if seen_by_a_login(a).split() != ["one", "local"]:
        problems.append(f"after a local change a login sees {seen_by_a_login(a)!r}, not the fleet's 'one' and 'local'")
    again = a.cli("master", "run", "--", "true", check=False)
    if "filled with the fleet's commit" in again.stderr:
        problems.append("master was filled again though it held the deployed commit (the control)")
    fsck = ostree(os.path.join(a.path, "fleet"), "fsck", check=False)
    if fsck.returncode != 0:
        problems.append(f"the repository's objects changed: {fsck.stdout}{fsck.stderr}")
    record("fleet: a pulled commit is hardlinked into a directory generation (and built into erofs from such a tree); "
           "master is filled with it before a local change, and a kill in that is mended", "overlay", 1,
           1 - bool(problems), [], "", problems)
    assert not problems, "\n".join(problems)


def test_a_session_user_cannot_change_the_repository_through_a_hardlinked_generation(fleet):
    """A directory generation's files are the repository's objects
    (hardlinks). The attack: a session user writes, truncates and chmods a
    file of the image they own, and links it in a directory of theirs; the
    control: their session sees each change (overlay copies the file up).
    The generation's file, a new root and `ostree fsck` must show none of it."""
    a, _ = fleet.machines
    master = os.path.join(fleet.build_host.path, "master")
    uid = pwd.getpwnam("lctest1").pw_uid
    os.makedirs(os.path.join(master, "srv", "theirs"))
    with open(os.path.join(master, "srv", "theirs", "file"), "w") as f:
        f.write("as published\n")
    for path in ("srv/theirs", "srv/theirs/file"):
        os.chown(os.path.join(master, path), uid, uid)
    fleet.export("one")
    assert fleet.pull(a).returncode == 0
    generation = os.path.join(a.path, "stable", current(a), "srv", "theirs", "file")
    before = os.stat(generation)
    assert before.st_nlink >= 2 and before.st_ino in object_inodes(a), "the generation's file is not an object's hardlink"
    attack = ("echo planted >> /srv/theirs/file; chmod 600 /srv/theirs/file; ln /srv/theirs/file /srv/theirs/link; "
              "echo again > /srv/theirs/link; stat -c '%a %h' /srv/theirs/file; cat /srv/theirs/file")
    session = HeldSession(a, "lctest1", before=attack)
    session.wait_until_in(a)
    status, output = session.finish()
    problems = []
    if status != 0 or "600 2" not in output or "again" not in output:
        problems.append(f"the control: the session did not see its own changes ({status}): {output}")
    after = os.stat(generation)
    with open(generation) as f:
        content = f.read()
    if content != "as published\n" or (after.st_mode & 0o777, after.st_nlink, after.st_ino) != \
            (before.st_mode & 0o777, before.st_nlink, before.st_ino):
        problems.append(f"the generation's file changed: {content!r}, mode {after.st_mode:o}, links {after.st_nlink}")
    fresh = HeldSession(a, "lctest2", before="cat /srv/theirs/file; ls /srv/theirs")
    fresh.wait_until_in(a)
    _, seen = fresh.finish()
    if "as published" not in seen or "planted" in seen or "link" in seen:
        problems.append(f"a new root sees the first user's changes: {seen}")
    fsck = ostree(os.path.join(a.path, "fleet"), "fsck", check=False)
    if fsck.returncode != 0:
        problems.append(f"the repository's objects changed: {fsck.stdout}{fsck.stderr}")
    record("fleet: a session user's writes, chmod and link of a file of a hardlinked generation stay in their root "
           "(the repository's object, the generation and a new root unchanged)", "overlay", 1, 1 - bool(problems), [],
           "", problems)
    assert not problems, "\n".join(problems)


@needs_backend("btrfs")
def test_a_btrfs_login_machine_gets_each_commit_as_a_read_only_subvolume(fleet, image_dir):
    machine = login_machine(image_dir, fleet.server.url, fleet.keys.public, 4, "btrfs")
    problems = []
    try:
        fleet.export("one")
        pulled = fleet.pull(machine)
        generation = os.path.join(machine.path, "stable", current(machine))
        if pulled.returncode != 0 or seen_by_a_login(machine) != "one":
            problems.append(f"the pull: {pulled.stdout}{pulled.stderr}")
        readonly = run(["btrfs", "property", "get", "-ts", generation, "ro"], check=False).stdout.strip()
        if readonly != "ro=true" or os.stat(generation).st_ino != 256:
            problems.append(f"{generation} is not a read-only subvolume: {readonly}")
        fleet.export("two")
        killed = fleet.pull(machine, debug=True, env={**os.environ, "LOGINCHROOT_TEST_CRASH_AT": "pull.checked-out"})
        machine.cli("start")
        machine.cli("gc")
        stable = sorted(os.listdir(os.path.join(machine.path, "stable")))
        if killed.returncode != -9 or any(name.endswith(".tmp") for name in stable) or current(machine) != "gen-2":
            problems.append(f"killed at pull.checked-out ({killed.returncode}): current {current(machine)}, stable/ {stable}")
        again = fleet.pull(machine)
        if again.returncode != 0 or seen_by_a_login(machine) != "two":
            problems.append(f"the pull after the kill: {again.stdout}{again.stderr}")
    finally:
        destroy_store(machine)
    record("fleet: a btrfs login machine gets each commit as a read-only subvolume; a kill in the checkout leaves "
           "no half generation", "btrfs", 1, 1 - bool(problems), [], "", problems)
    assert not problems, "\n".join(problems)


def test_a_dev_that_is_a_symlink_is_committed_as_one_and_hides_nothing_of_the_host(build_host):
    """A hostile image: /dev a symlink to /etc. The export's tmpfs over /dev
    must not follow it (it would hide the host's /etc from the export's own
    namespace); the symlink is committed as it is. The control: /etc/fleet
    of the image is in the same commit."""
    store, repository = build_host
    master = os.path.join(store.path, "master")
    shutil.rmtree(os.path.join(master, "dev"))
    os.symlink("/etc", os.path.join(master, "dev"))
    with open(os.path.join(master, "etc", "fleet"), "w") as f:
        f.write("control\n")
    result, (_, commit) = export(store, repository)
    assert result.returncode == 0 and commit, result.stderr
    listing = ostree(repository, "ls", "-R", commit).stdout
    assert re.search(r"^l00777 0 0 +0 /dev -> /etc$", listing, re.M), listing[:1500]
    assert re.search(r" /etc/fleet$", listing, re.M), "the control: the image's /etc/fleet is committed"
