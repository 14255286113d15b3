"""Each real PAM client logs a user into a session root on each backend and
shows the same things:

- a file written to the root filesystem (/srv/scratch, part of the image,
  not bound from the host) is gone after logout and never reached the image
  or master;
- writes to /tmp and the home directory stay on the host;
- processes left running (nohup, setsid, double fork, in their own user and
  mount namespaces, or forking all the time) are dead after logout;
- a second concurrent login of the same user sees the first one's files,
  another user does not;
- nothing is left behind.
"""
import json
import os
import pwd
import time

import pytest

from lclab.clients import CLIENTS, MultithreadedClient
from lclab.harness import SPAWN_INTERVAL, assert_no_residue, run, token


def session_script(t):
    # Leftover processes get distinctive arguments and no open fds, so ssh
    # does not wait for them.
    return f"""
echo root > /srv/scratch/rootfile-{t}
echo tmp > /tmp/lc-tmp-{t}
echo home > $HOME/lc-home-{t}
nohup sleep 3001 >/dev/null 2>&1 </dev/null &
setsid sleep 3002 >/dev/null 2>&1 </dev/null &
( sleep 3003 >/dev/null 2>&1 </dev/null & ) &
unshare -Urm sleep 3006 >/dev/null 2>&1 </dev/null &
sh -c 'while :; do sleep 3007 & sleep {SPAWN_INTERVAL}; done' >/dev/null 2>&1 </dev/null &
cat /srv/scratch/rootfile-{t}
cat /etc/loginchroot-image
echo marker=$(cat /run/loginchroot-session)
echo cwd=$(pwd)
echo group=$(id -gn)
echo fds: $(ls -l /proc/$$/fd/ | grep -c -e 'mnt:' -e loginchroot -e '/var/lib/lc-' -e /dev/mapper -e /dev/loop)
"""


def check_inside(output, user):
    assert "root\n" in output, output
    assert "golden image built" in output, output
    assert f"marker={user}" in output, output
    assert f"cwd=/home/{user}" in output, output
    assert f"group={user}" in output, output  # passwd and group resolve inside
    assert "fds: 0" in output, output  # no namespace, state or store fd leaked into the shell


def check_after_logout(store, user, t):
    home = pwd.getpwnam(user).pw_dir
    try:
        assert os.path.exists(f"/tmp/lc-tmp-{t}"), "a write to /tmp did not reach the host"
        assert os.path.exists(f"{home}/lc-home-{t}"), "a write to $HOME did not reach the host"
        assert not os.path.exists(f"/srv/scratch/rootfile-{t}")
        with store.image_trees() as trees:
            for tree in trees:
                assert not os.path.exists(f"{tree}/srv/scratch/rootfile-{t}"), f"root write reached {tree}"
        assert_no_residue(store)
    finally:
        for path in (f"/tmp/lc-tmp-{t}", f"{home}/lc-home-{t}"):
            if os.path.exists(path):
                os.unlink(path)


@pytest.fixture(params=sorted(CLIENTS))
def client(request, store, system_services):
    client = CLIENTS[request.param]()
    if hasattr(client, "setup"):
        client.setup(store)
    yield client
    if hasattr(client, "teardown"):
        client.teardown()


def test_login_gets_a_private_root_that_dies_at_logout(client, store):
    t = token()
    output = client.run(store, "lctest1", session_script(t))
    check_inside(output, "lctest1")
    check_after_logout(store, "lctest1", t)


def test_second_login_shares_the_root_and_other_users_do_not(client, store):
    t = token()
    holder = client.start(store, "lctest1", f"""
echo shared > /srv/scratch/shared-{t}
nohup sleep 3004 >/dev/null 2>&1 </dev/null &
while [ ! -e /tmp/lc-release-{t} ]; do sleep {SPAWN_INTERVAL}; done
""")
    try:
        deadline = time.time() + 60
        while not os.path.exists(f"{store.path}/sessions/lctest1/srv/scratch/shared-{t}") and store.backend == "btrfs":
            assert time.time() < deadline, "first session never wrote its file"
            time.sleep(0.1)
        if store.backend in ("overlay", "overlay-erofs", "dm-thin"):
            # The overlay upper layer and the thin volume are only visible inside the namespace.
            pin = f"{store.state}/pins/lctest1"
            while run(["nsenter", f"--mount={pin}", "test", "-e", f"/srv/scratch/shared-{t}"], check=False).returncode != 0:
                assert time.time() < deadline, "first session never wrote its file"
                time.sleep(0.1)
        same = client.run(store, "lctest1", f"cat /srv/scratch/shared-{t} || echo MISSING")
        assert "shared" in same and "MISSING" not in same, same
        other = client.run(store, "lctest2", f"cat /srv/scratch/shared-{t} 2>/dev/null || echo MISSING")
        assert "MISSING" in other, other
        # The second login's logout must not have destroyed the first's root.
        # (sshd closes the PAM session just after the client has its exit
        # status, so lctest2's root may take a moment to go.)
        deadline = time.time() + 15
        while True:
            keys = [r["key"] for r in json.loads(store.cli("sessions", "--json").stdout)]
            if keys == ["lctest1"] or time.time() > deadline:
                break
            time.sleep(0.1)
        assert keys == ["lctest1"], keys
    finally:
        open(f"/tmp/lc-release-{t}", "w").close()
        status, output = holder.wait()
        os.unlink(f"/tmp/lc-release-{t}")
    assert status == 0, output
    assert_no_residue(store)
    with store.image_trees() as trees:
        assert not any(os.path.exists(f"{tree}/srv/scratch/shared-{t}") for tree in trees)


def test_close_without_root_privileges_never_fails_and_gc_reclaims(store):
    """systemd's user manager closes its PAM session without root: the close
    succeeds (PAM is never failed), the root stays, and gc reclaims it."""
    mt = MultithreadedClient.build()
    result = run([mt, store.service, "lctest1", "setsid sleep 3008 >/dev/null 2>&1 </dev/null &"],
                 env={**os.environ, "MTCLIENT_CLOSE_UNPRIVILEGED": "1"}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["key"] for r in json.loads(store.cli("sessions", "--json").stdout)] == ["lctest1"]
    assert "root lctest1: destroyed" in store.cli("gc").stdout
    assert_no_residue(store)
