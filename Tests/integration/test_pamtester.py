"""pamtester drives the module directly: open and close in one process, open
in one process and reclaim by gc, policy (exempt, nested, bad names, broken
config), and loading without the Swift toolchain."""
import json
import os
import pwd

import pytest

from lclab.harness import (CLI, MODULE, SPAWN_INTERVAL, assert_no_residue, in_root, needs_backend, pamtester, run, token,
                           write_config)


def test_open_and_close_in_one_process_leaves_nothing(store):
    result = pamtester(store, "lctest1", "open_session", "close_session")
    assert "successfully opened" in result.stdout + result.stderr
    assert_no_residue(store)


def test_open_without_close_is_reclaimed_by_gc(store):
    t = token()
    pamtester(store, "lctest1", "open_session")
    sessions = json.loads(store.cli("sessions", "--json").stdout)
    assert [r["key"] for r in sessions] == ["lctest1"] and sessions[0]["phase"] == "active"
    home = pwd.getpwnam("lctest1").pw_dir
    out = in_root(store, "lctest1", "lctest1", f"""
echo root > /srv/scratch/rootfile-{t}; echo tmp > /tmp/lc-tmp-{t}; echo home > $HOME/lc-home-{t}
nohup sleep 3001 >/dev/null 2>&1 </dev/null &
setsid sleep 3002 >/dev/null 2>&1 </dev/null &
( sleep 3003 >/dev/null 2>&1 </dev/null & ) &
unshare -Urm sleep 3006 >/dev/null 2>&1 </dev/null &
sh -c 'while :; do sleep 3007 & sleep {SPAWN_INTERVAL}; done' >/dev/null 2>&1 </dev/null &
cat /srv/scratch/rootfile-{t}; head -n1 /run/loginchroot-session""").stdout
    assert out.split() == ["root", "lctest1"]
    try:
        with store.image_trees() as trees:
            assert not os.path.exists(f"{trees[0]}/srv/scratch/rootfile-{t}")
        gc = store.cli("gc").stdout
        assert "root lctest1: destroyed" in gc, gc
        assert os.path.exists(f"/tmp/lc-tmp-{t}") and os.path.exists(f"{home}/lc-home-{t}")
        assert_no_residue(store)
    finally:
        for path in (f"/tmp/lc-tmp-{t}", f"{home}/lc-home-{t}"):
            if os.path.exists(path):
                os.unlink(path)


def test_end_kills_a_session_like_a_logout(store):
    pamtester(store, "lctest1", "open_session")
    in_root(store, "lctest1", "lctest1", "setsid sleep 3005 >/dev/null 2>&1 </dev/null &")
    assert "ended root lctest1" in store.cli("end", "lctest1").stdout
    assert_no_residue(store)


def test_root_is_exempt_and_gets_the_host_root(store):
    pamtester(store, "root", "open_session", "close_session")
    assert json.loads(store.cli("sessions", "--json").stdout) == []


def test_hostile_user_names_are_refused(store):
    """Including an empty PAM_USER, one with bytes that are not UTF-8, and a
    valid name with no account."""
    for name in ("../etc", "a/b", "a b", "x" * 300, "-rf", ".hidden", "", b"lc\xff\xfe", "lcnosuchuser"):
        result = pamtester(store, name, "open_session", check=False)
        assert result.returncode != 0, name
    assert json.loads(store.cli("sessions", "--json").stdout) == []
    assert_no_residue(store)


def test_broken_config_fails_closed_but_root_gets_in(store):
    with open(store.config, "a") as f:
        f.write("\n[session]\nbogus_key = 1\n")
    denied = pamtester(store, "lctest1", "open_session", check=False)
    assert denied.returncode != 0
    assert "misconfigured" in denied.stdout + denied.stderr
    pamtester(store, "root", "open_session", "close_session")


def test_group_writable_config_is_refused(store):
    os.chmod(store.config, 0o664)
    try:
        assert pamtester(store, "lctest1", "open_session", check=False).returncode != 0
        assert "writable by group" in store.cli("check", check=False).stdout
    finally:
        os.chmod(store.config, 0o644)


def test_missing_store_fails_closed_or_allows_when_configured(store):
    # An unpublished store: the login is refused with a message...
    with store.unpublished():
        denied = pamtester(store, "lctest1", "open_session", check=False)
        assert denied.returncode != 0
        assert "contact the administrator" in denied.stdout + denied.stderr
        assert_no_residue(store)
        # ...unless the site prefers availability.
        write_config(store, "on_error = allow")
        pamtester(store, "lctest1", "open_session", "close_session")
        assert json.loads(store.cli("sessions", "--json").stdout) == []


def test_logins_never_nest_and_only_the_roots_owner_stays(store, users):
    """A login from inside a session root (its /run/loginchroot-session
    marker is there) stays where it is when it is the root's owner's, and
    is refused for anyone else. Simulated on the host: a private mount
    namespace with the marker bound in, running the real module."""
    marker = "/run/loginchroot-session"
    assert not os.path.exists(marker), "this host itself looks like a session root"
    open(marker, "w").close()  # the mount point; the host's copy stays empty
    try:
        results = {}
        for owner in ("lctest2", "lctest1"):
            script = f"printf 'someroot\\nuid={users[owner].pw_uid}\\n' > /tmp/lc-marker-$$ " \
                     f"&& mount --bind /tmp/lc-marker-$$ {marker} && rm /tmp/lc-marker-$$ " \
                     f"&& pamtester {store.service} lctest2 open_session close_session"
            results[owner] = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], check=False)
        assert results["lctest2"].returncode == 0, results["lctest2"].stdout + results["lctest2"].stderr
        assert results["lctest1"].returncode != 0, "lctest2 got a session inside lctest1's root"
        assert json.loads(store.cli("sessions", "--json").stdout) == []
    finally:
        os.unlink(marker)
    assert_no_residue(store)


def test_module_and_cli_run_without_the_swift_toolchain(store):
    """The Swift runtime is linked in statically: hide /opt/swift (and any
    libswift*) in a private mount namespace, log in and run the CLI."""
    for binary in (MODULE, CLI):
        assert "libswift" not in run(["ldd", binary]).stdout, binary
    script = f"""
set -e
mount -t tmpfs none /opt/swift
test ! -e /opt/swift/usr/bin/swift
pamtester {store.service} lctest1 open_session close_session
{CLI} status --config {store.config}
"""
    result = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_residue(store)


def test_callers_in_their_own_namespace_on_any_cpu_can_log_in(store):
    """Mount namespace ids come from per-CPU batches (Linux 6.18), and the
    kernel refuses to pin a namespace whose id is below the caller's. A
    caller whose namespace was made on one CPU, logging in from another,
    hits that in one of these two orders; the module must still pin."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to make namespaces from two per-CPU id batches")
    first, second = cpus[0], cpus[-1]
    for made_on, login_on in ((first, second), (second, first)):
        script = f"taskset -c {login_on} pamtester {store.service} lctest1 open_session close_session"
        result = run(["taskset", "-c", str(made_on), "unshare", "--mount", "--propagation", "private",
                      "sh", "-c", script], check=False)
        assert result.returncode == 0, f"namespace made on CPU {made_on}, login on CPU {login_on}: " \
                                       + result.stdout + result.stderr
        assert_no_residue(store)


def test_publish_gives_new_logins_the_new_generation(store):
    t = token()
    pamtester(store, "lctest1", "open_session")
    try:
        store.cli("master", "run", "--", "sh", "-c", f"echo {t} > /etc/image-version")
        current = json.loads(store.cli("status", "--json").stdout)["current"]
        published = json.loads(store.cli("publish", "--json").stdout)["generation"]
        assert published == f"gen-{int(current.removeprefix('gen-')) + 1}", (current, published)
        pamtester(store, "lctest2", "open_session")
        old = in_root(store, "lctest1", "lctest1", "cat /etc/image-version 2>/dev/null || echo none").stdout.strip()
        new = in_root(store, "lctest2", "lctest2", "cat /etc/image-version").stdout.strip()
        assert old != t and new == t, (old, new)
        status = json.loads(store.cli("status", "--json").stdout)
        assert status["current"] == published
    finally:
        store.cli("end", "lctest1", check=False)
        store.cli("end", "lctest2", check=False)
    assert_no_residue(store)


@needs_backend("btrfs")
def test_per_session_mode_gives_each_session_its_own_root(image_dir):
    from lclab.harness import destroy_store, make_store
    store = make_store("btrfs", image_dir, extra="mode = per-session")
    try:
        pamtester(store, "lctest1", "open_session")
        pamtester(store, "lctest1", "open_session")
        keys = sorted(r["key"] for r in json.loads(store.cli("sessions", "--json").stdout))
        assert len(keys) == 2 and all(k.startswith("lctest1+") for k in keys), keys
        in_root(store, keys[0], "lctest1", "echo mine > /srv/scratch/private")
        other = in_root(store, keys[1], "lctest1", "cat /srv/scratch/private 2>/dev/null || echo MISSING").stdout
        assert other.strip() == "MISSING"
        gc = store.cli("gc").stdout
        assert gc.count("destroyed") == 2, gc
        assert_no_residue(store)
    finally:
        destroy_store(store)


def test_group_writable_state_directory_is_refused(store):
    pamtester(store, "lctest1", "open_session", "close_session")  # creates the state directory
    os.chmod(store.state, 0o775)
    try:
        denied = pamtester(store, "lctest1", "open_session", check=False)
        assert denied.returncode != 0
        assert os.listdir(f"{store.state}/roots") == []
    finally:
        os.chmod(store.state, 0o700)
    assert_no_residue(store)


@needs_backend("btrfs")
def test_subvolumes_made_inside_a_btrfs_root_do_not_block_its_removal(image_dir):
    from lclab.harness import destroy_store, make_store
    store = make_store("btrfs", image_dir)
    try:
        pamtester(store, "lctest1", "open_session")
        scratch = f"{store.path}/sessions/lctest1/srv/scratch"
        run(["btrfs", "-q", "subvolume", "create", f"{scratch}/nested"])
        run(["btrfs", "-q", "subvolume", "create", f"{scratch}/nested/deeper"])
        assert "ended root lctest1" in store.cli("end", "lctest1").stdout
        assert_no_residue(store)
    finally:
        destroy_store(store)
