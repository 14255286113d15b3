"""Crash at every step. The debug build (the same code with its named steps
live, see Sources/LoginChrootPlatform/CrashPoints.swift) is killed with
SIGKILL at each step that a login, a logout, a publish, a gc and an end pass
on this backend. A traced run first lists the steps, so a step added to the
code is covered here without touching this file.

After each kill the next login must work, gc must succeed and leave no
residue (on dm-thin the pool must agree with the store's record), and the
host's /tmp, the user's home and the host mount table must be untouched.
"""
import json
import os
import tempfile

import pytest

from lclab.harness import DEBUG_MODULE, TIME_SCALE, Canaries, HeldSession, record, run, settled_residue, write_config, write_service

USER = "lctest1"
# The VM lab emulates its CPU, and a kill and its recovery cost it about 20 s:
# there only the steps where dm-thin does its own work are killed. The
# session manager's steps are the same code on every backend, all killed on
# the host.
IN_LAB = TIME_SCALE > 1


def affordable(steps):
    if not IN_LAB:
        return steps
    return [s for s in steps if s.startswith(("thin.", "publish.", "open.snapshot-made#", "teardown.snapshot-removed#"))]


@pytest.fixture
def crashable(store, users):
    write_service(store, module=DEBUG_MODULE)  # the store fixture puts the release module back
    canaries = Canaries(users[USER].pw_dir)
    yield store, canaries
    canaries.remove()


def env(**settings):
    return {**os.environ, **settings}


def traced(operation):
    """The steps `operation(environment)` passes, in order, each named
    STEP#N for the Nth time it is reached (LOGINCHROOT_TEST_CRASH_AT takes
    that form too)."""
    with tempfile.NamedTemporaryFile(prefix="lc-trace-") as trace:
        operation(env(LOGINCHROOT_TEST_TRACE=trace.name))
        steps = trace.read().decode().split()
    return [f"{step}#{steps[:n + 1].count(step)}" for n, step in enumerate(steps)]


def pamtester(store, *ops, environment=None):
    return run(["pamtester", store.service, USER, *ops], check=False, env=environment)


def holder(store):
    """A live session of USER, so that a crashing login joins or leaves it;
    it checks at its end that its root is still there."""
    held = HeldSession(store, USER, before="echo > /srv/scratch/held", after="cat /srv/scratch/held")
    held.wait_until_in(store)
    return held


def recovered(store, canaries, held=None):
    """What is wrong after a crash once the next login and gc have run."""
    problems = []
    if held:
        status, output = held.finish()
        if status != 0:
            problems.append(f"the other session of the user was disturbed: {output}")
    login = pamtester(store, "open_session", "close_session")
    if login.returncode != 0:
        problems.append(f"the next login failed: {login.stdout}{login.stderr}")
    gc = store.cli("gc", "--json", check=False)
    if gc.returncode != 0:
        problems.append(f"gc failed: {gc.stdout}{gc.stderr}")
    status = store.cli("status", "--json", check=False)
    if status.returncode != 0 or not json.loads(status.stdout).get("current"):
        problems.append(f"the store has no usable current generation: {status.stdout}{status.stderr}")
    problems += settled_residue(store)
    problems += [f"lost on the host: {what}" for what in canaries.lost()]
    return problems


def crash_at_each_step(store, canaries, case, operation, steps, setup=lambda: None, with_holder=False):
    """Runs `operation` once per step, killed there, and checks recovery."""
    steps = affordable(steps)
    assert steps, f"{case}: the traced run passed no named step"
    failures = []
    for step in steps:
        setup()
        held = holder(store) if with_holder else None
        result = operation(env(LOGINCHROOT_TEST_CRASH_AT=step))
        problems = [] if result.returncode == -9 else [f"not killed at the step (exit {result.returncode}): "
                                                       f"{result.stdout}{result.stderr}"]
        problems += recovered(store, canaries, held)
        failures += [f"{step}: {problem}" for problem in problems]
    held = len(steps) - len({f.split(": ")[0] for f in failures})
    record(case, store.backend, len(steps), held, [f for f in failures if "lost on the host" in f],
           "steps: " + ", ".join(steps), failures)
    assert not failures, "\n".join(failures)


def login_steps(store):
    """A login, and a login with its logout (each one pamtester process),
    with the steps of the login and those the logout adds."""
    def login(environment):
        return pamtester(store, "open_session", environment=environment)

    def login_and_logout(environment):
        return pamtester(store, "open_session", "close_session", environment=environment)

    open_steps = traced(login)
    store.cli("gc")
    return login, login_and_logout, open_steps, traced(login_and_logout)[len(open_steps):]


def test_kill_the_login_process_at_each_step_of_open_and_close(crashable):
    store, canaries = crashable
    login, login_and_logout, open_steps, close_steps = login_steps(store)
    assert "open.record-saved#1" in open_steps and "teardown.unpinned#1" in close_steps, (open_steps, close_steps)
    crash_at_each_step(store, canaries, "kill -9 the login process at each step of open_session",
                       login, open_steps)
    crash_at_each_step(store, canaries, "kill -9 the login process at each step of close_session",
                       login_and_logout, close_steps)


@pytest.mark.skipif(IN_LAB, reason="no dm-thin step in a join or a leave; the host tier kills every step of both")
def test_kill_a_login_that_joins_or_leaves_a_live_root(crashable):
    """The user's other session must not notice."""
    store, canaries = crashable
    held = holder(store)
    try:
        login, login_and_logout, join_steps, leave_steps = login_steps(store)
    finally:
        assert held.finish()[0] == 0
    store.cli("gc")
    assert "open.member-recorded#1" in join_steps and not any(s.startswith("teardown.") for s in leave_steps), \
        (join_steps, leave_steps)
    crash_at_each_step(store, canaries, "kill -9 a second login of the user while it joins the live root",
                       login, join_steps, with_holder=True)
    crash_at_each_step(store, canaries, "kill -9 a second login of the user while it leaves the live root",
                       login_and_logout, leave_steps, with_holder=True)


def test_kill_the_helper_at_each_step_of_publish_gc_and_end(crashable):
    store, canaries = crashable
    write_config(store, "[store]\nkeep_generations = 1\n")  # so gc has a generation to collect

    def publish(environment=None):
        return store.cli("publish", check=False, debug=True, env=environment)

    def dead_session():
        assert pamtester(store, "open_session").returncode == 0  # the client exits: gc and end have work

    def work_for_gc():  # each run of gc finds the same: a dead session and a generation to collect
        dead_session()
        publish()

    def gc(environment):
        return store.cli("gc", check=False, debug=True, env=environment)

    def end(environment):
        return store.cli("end", USER, check=False, debug=True, env=environment)

    publish_steps = traced(publish)
    store.cli("gc")
    work_for_gc()
    gc_steps = traced(gc)
    dead_session()
    end_steps = traced(end)
    assert publish_steps and "teardown.unpinned#1" in gc_steps and "teardown.unpinned#1" in end_steps
    crash_at_each_step(store, canaries, "kill -9 the helper at each step of publish", publish, publish_steps)
    if IN_LAB:
        return  # gc and end remove volumes as a logout does, whose dm-thin steps the lab kills
    crash_at_each_step(store, canaries, "kill -9 the helper at each step of gc", gc, gc_steps, setup=work_for_gc)
    crash_at_each_step(store, canaries, "kill -9 the helper at each step of end", end, end_steps,
                       setup=dead_session)
