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
import shutil
import socket
import subprocess
import tempfile
import time

import pexpect
import pytest

from conftest import SPAWN_INTERVAL, TIME_SCALE, assert_no_residue, c_client, free_port, run, token


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


# --- clients -------------------------------------------------------------
# Each client has run(store, user, script) -> output (login, script, logout)
# and start(store, user, script) -> a handle with wait(), for a session that
# stays open in the background.


class Background:
    def __init__(self, proc):
        self.proc = proc

    def wait(self):
        out, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, out + err


class SuClient:
    def __init__(self, command):
        self.command = command

    def run(self, store, user, script):
        return run([self.command, "-l", user, "-c", script]).stdout

    def start(self, store, user, script):
        return Background(subprocess.Popen([self.command, "-l", user, "-c", script], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))


class LoginClient:
    """util-linux login on a pseudo-terminal (login -f: preauthenticated)."""

    def run(self, store, user, script):
        child = self._spawn(user)
        child.sendline(f"echo BEGIN-OF-''SCRIPT; ({script}) ; echo END-OF-''SCRIPT ; exit")
        child.expect("BEGIN-OF-SCRIPT\r\n", timeout=60)
        child.expect("END-OF-SCRIPT\r\n", timeout=60)
        output = child.before
        child.expect(pexpect.EOF, timeout=60)
        child.close()
        return output.replace("\r\n", "\n")

    def start(self, store, user, script):
        child = self._spawn(user)
        child.sendline(f"({script}) ; exit")

        class Handle:
            def wait(self_inner):
                child.expect(pexpect.EOF, timeout=120)
                child.close()
                return child.exitstatus, child.before
        return Handle()

    def _spawn(self, user):
        child = pexpect.spawn("login", ["-f", user], encoding="utf-8", timeout=60, env={"TERM": "dumb"})
        # A prompt that the echo of this very line cannot match.
        child.sendline("PS1='LC''PROMPT> '; stty -echo")
        child.expect("LCPROMPT> ", timeout=60)
        return child


class MultithreadedClient:
    @staticmethod
    def build():
        return c_client("mtclient")

    def run(self, store, user, script):
        return run([self.build(), store.service, user, script]).stdout

    def start(self, store, user, script):
        return Background(subprocess.Popen([self.build(), store.service, user, script], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))


class SshClient:
    """A real OpenSSH sshd on a loopback port; key login."""

    def __init__(self):
        self.server = None

    def setup(self, store):
        self.dir = tempfile.mkdtemp(prefix="lc-sshd-", dir="/var/lib")
        service = f"sshd-{store.service}"
        # sshd names its PAM service after its own program name.
        self.sshd = os.path.join(self.dir, service)
        os.symlink("/usr/sbin/sshd", self.sshd)
        with open(f"/etc/pam.d/{service}", "w") as f:
            f.write("auth required pam_permit.so\naccount required pam_permit.so\n" + store.pam_lines())
        self.service_file = f"/etc/pam.d/{service}"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{self.dir}/host_key"])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{self.dir}/user_key"])
        self.port = free_port()
        with open(f"{self.dir}/sshd_config", "w") as f:
            f.write(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.dir}/host_key
UsePAM yes
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys.%u
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
""")
        key = open(f"{self.dir}/user_key.pub").read()
        for user in ("lctest1", "lctest2"):
            with open(f"{self.dir}/authorized_keys.{user}", "w") as f:
                f.write(key)
        os.chmod(self.dir, 0o755)
        os.makedirs("/run/sshd", exist_ok=True)
        self.server = subprocess.Popen([self.sshd, "-D", "-e", "-f", f"{self.dir}/sshd_config"],
                                       stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/sshd.log", "w"))
        # Ready once it greets: cheaper than a key exchange under emulation.
        deadline = time.time() + 10 * TIME_SCALE
        while not self._greets():
            assert self.server.poll() is None and time.time() < deadline, \
                "sshd did not start:\n" + open(f"{self.dir}/sshd.log").read()
            time.sleep(0.1)

    def _greets(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5 * TIME_SCALE) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def teardown(self):
        if self.server:
            self.server.terminate()
            self.server.wait()
        if os.path.exists(self.service_file):
            os.unlink(self.service_file)
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, user, script):
        return ["ssh", "-i", f"{self.dir}/user_key", "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                f"{user}@127.0.0.1", script]

    def run(self, store, user, script):
        result = run(self.command(user, script), check=False)
        assert result.returncode == 0, f"ssh failed: {result.stderr}\n" + open(f"{self.dir}/sshd.log").read()
        return result.stdout

    def start(self, store, user, script):
        return Background(subprocess.Popen(self.command(user, script), stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))


CLIENTS = {
    "sshd": SshClient,
    "login": LoginClient,
    "su": lambda: SuClient("su"),
    "runuser": lambda: SuClient("runuser"),
    "multithreaded": MultithreadedClient,
}


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
        if store.backend in ("overlay", "dm-thin"):
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
