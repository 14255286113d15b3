"""Many logins at once, and publishing under load.

- 100 logins at once, 10 users with 10 sessions each, started and ended at
  staggered times so logouts interleave with logins: every session sees its
  own user's root (its marker, its user's files, never another user's), no
  root is destroyed under a session still using it, and nothing is left.
- A publish and an update while 50 sessions are open: the open sessions keep
  their generation undisturbed, new sessions get the new one, a quick login
  and logout finishes while the update is still running, and gc collects the
  generations no session uses any more.
"""
import json
import os
import pwd
import random
import subprocess
import tempfile
import time

import pytest

from lclab.harness import (CLI, TIME_SCALE, Canaries, HeldSession, c_client, record, run, settled_residue,
                      temporary_users, wait_until_in, write_config)

# The VM lab emulates its CPU and a dm-thin login costs it seconds: there
# 20 logins at once (4 users x 5) and 10 held; the host tier runs 100 and 50.
IN_LAB = TIME_SCALE > 1
USERS = tuple(f"lcc{n}" for n in range(4 if IN_LAB else 10))
PER_USER = 5 if IN_LAB else 10
HELD = 10 if IN_LAB else 50


@pytest.fixture(scope="module")
def many_users():
    with temporary_users(USERS):
        yield USERS


@pytest.fixture
def shared_tmp():
    """A directory on the host's /tmp that every session writes its findings to."""
    path = tempfile.mkdtemp(prefix="lc-conc-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    run(["rm", "-rf", path])


def login(store, user, command):
    return subprocess.Popen([c_client("pamclient"), store.service, user, "1", command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc):
    out, err = proc.communicate(timeout=300 * TIME_SCALE)
    return proc.returncode, out + err


def test_many_concurrent_logins_each_get_their_users_root(store, many_users, shared_tmp):
    rng = random.Random(4)
    canaries = Canaries(pwd.getpwnam(USERS[0]).pw_dir)
    sessions = [(user, f"{user}-{n}") for user in USERS for n in range(PER_USER)]
    rng.shuffle(sessions)
    procs = []
    try:
        for user, sid in sessions:
            # Each session checks its marker, leaves its name in the root,
            # lives a while, and reports which session names it saw there.
            stay = rng.choice([0, 0.1, 0.3, 0.6, 1.0]) * TIME_SCALE
            # (Shell builtins only: a process start costs half a second in the VM lab.)
            procs.append((user, sid, login(store, user, f"""read marker < /run/loginchroot-session
[ "$marker" = {user} ] || exit 11
echo {sid} > /srv/scratch/{sid}
{f"sleep {stay}" if stay else ":"}
[ -e /srv/scratch/{sid} ] || exit 12
echo /srv/scratch/* > {shared_tmp}/{sid}""")))
            if rng.random() < 0.3:
                run(["sleep", str(rng.choice([0.05, 0.2]) * TIME_SCALE)])  # logouts interleave with logins
        results = {sid: (user, *finished(proc)) for user, sid, proc in procs}
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
    problems = []
    for sid, (user, status, output) in results.items():
        if status != 0:
            problems.append(f"{sid}: exit {status}: {output.strip()}")
            continue
        seen = [os.path.basename(path) for path in open(f"{shared_tmp}/{sid}").read().split()]
        foreign = [s for s in seen if not s.startswith(user + "-")]
        if sid not in seen or foreign:
            problems.append(f"{sid} saw {seen}")
    problems += settled_residue(store, users=USERS)
    lost = canaries.lost()
    canaries.remove()
    record(f"{len(sessions)} concurrent logins ({len(USERS)} users x {PER_USER} sessions), logouts interleaved",
           store.backend, len(sessions),
           len(sessions) - len([p for p in problems if p.split(":")[0] in results]), lost,
           "each session saw its own marker and only its own user's files; no root went while in use", problems)
    assert not problems and not lost, "\n".join(problems + lost)


def test_publish_and_update_while_many_sessions_are_open(store, many_users, shared_tmp):
    write_config(store, "[store]\nkeep_generations = 1\n"
                        "[master]\nupdate_command = sleep " + str(3 * TIME_SCALE) + "; echo updated > /etc/image-version\n")
    before = json.loads(store.cli("status", "--json").stdout)["current"]
    mark = f"published-{os.getpid()}-{time.time_ns()}"
    held = []
    problems = []
    try:
        for n in range(HELD):
            # Each records the image version it saw before the publish and after.
            look = "read version < /etc/image-version || version=none; echo $version > " + f"{shared_tmp}/held-{n}"
            held.append(HeldSession(store, USERS[n % len(USERS)], before=f"echo > /srv/scratch/held-{n}\n{look}-before",
                                    after=f"[ -e /srv/scratch/held-{n} ] || exit 12\n{look}-after"))
        wait_until_in(store, held)  # all are in before anything is published

        store.cli("master", "run", "--", "sh", "-c", f"echo {mark} > /etc/image-version")
        published = json.loads(store.cli("publish", "--json").stdout)["generation"]
        fresh = run(["pamtester", store.service, "lctest2", "open_session"], check=False)
        version = run(["nsenter", f"--mount={store.state}/pins/lctest2", "cat", "/etc/image-version"],
                      check=False).stdout.strip()
        store.cli("end", "lctest2", check=False)
        if fresh.returncode != 0 or version != mark:
            problems.append(f"a new login after the publish saw '{version}': {fresh.stdout}{fresh.stderr}")

        # The Athena race: a quick login and logout while an update runs.
        update = subprocess.Popen([CLI, "update", "--config", store.config], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        quick = run(["pamtester", store.service, "lctest2", "open_session", "close_session"], check=False)
        update_still_running = update.poll() is None
        update_output = update.communicate(timeout=300 * TIME_SCALE)[0]
        if quick.returncode != 0 or not update_still_running:
            problems.append(f"quick login during the update: exit {quick.returncode}, update still running: "
                            f"{update_still_running}: {quick.stdout}{quick.stderr}")
        if update.returncode != 0:
            problems.append(f"the update failed: {update_output}")
        newest = json.loads(store.cli("status", "--json").stdout)["current"]
        store.cli("gc")
        kept = [g["name"] for g in json.loads(store.cli("status", "--json").stdout)["generations"]]
        if store.backend == "overlay" and before not in kept:  # its open sessions still stand on it
            problems.append(f"gc removed {before} while sessions used it: {kept}")
    finally:
        for session in held:
            session.release()
        results = [session.finish() for session in held]
    for n, (status, output) in enumerate(results):
        seen = [open(path).read().strip() if os.path.exists(path) else "?"
                for path in (f"{shared_tmp}/held-{n}-before", f"{shared_tmp}/held-{n}-after")]
        if status != 0 or seen[0] != seen[1] or mark in seen:
            problems.append(f"held session {n}: exit {status}, saw image versions {seen}: {output.strip()}")
    gc = json.loads(store.cli("gc", "--json").stdout)
    generations = json.loads(store.cli("status", "--json").stdout)["generations"]
    if [g["name"] for g in generations] != [newest]:
        problems.append(f"gc left generations {generations} (current {newest}, was {before}, published {published}): {gc}")
    problems += settled_residue(store, users=USERS + ("lctest2",))
    record(f"publish and update while {HELD} sessions are open; quick login and logout during the update",
           store.backend, HELD + 2, HELD + 2 - len(problems), [],
           f"generations {before} -> {published} -> {newest}; gc left {newest} only", problems)
    assert not problems, "\n".join(problems)

