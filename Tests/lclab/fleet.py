"""The fleet tests' parts: GnuPG keys of their own, a network namespace with
only loopback in it, and the repository's web server there
(repo_server.py), which the login stores' `update --pull` reach on
127.0.0.1 inside that namespace."""
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from lclab.harness import run

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repo_server.py")


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
        os.chmod(self.public, 0o644)

    def remove(self):
        run(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"], check=False)
        shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def network_namespace():
    """A network namespace with only loopback, up; yields its /proc path
    (for nsenter --net=)."""
    holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep infinity"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "up", "the network namespace's loopback did not come up"
        yield f"/proc/{holder.pid}/ns/net"
    finally:
        holder.kill()
        holder.wait()


class RepoServer:
    """repo_server.py serving `directory` on 127.0.0.1:`port` inside `netns`."""

    def __init__(self, netns, directory, log):
        self.netns, self.directory, self.log = netns, directory, log
        self.port = 8000 + os.getpid() % 1000
        self.process = None

    def start(self, *options):
        self.stop()
        self.process = subprocess.Popen(["nsenter", f"--net={self.netns}", sys.executable, SERVER, self.directory,
                                         str(self.port), self.log, *options], stderr=subprocess.DEVNULL)
        for _ in range(100):  # until it listens
            probe = run(["nsenter", f"--net={self.netns}", sys.executable, "-c",
                         f"import socket; socket.create_connection(('127.0.0.1', {self.port}), 1)"], check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the repository's web server never listened")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
        if self.process:
            self.process.wait()

    def requests(self):
        """What it answered so far: [{"path", "status", "bytes"}]."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"


def pull(netns, cli, store, env=None):
    """`loginchroot update --pull` of `store`, inside `netns`."""
    return run(["nsenter", f"--net={netns}", cli, "update", "--pull", "--config", store.config], check=False, env=env)


def ostree(repository, *args, check=True):
    return run(["ostree", args[0], f"--repo={repository}", *args[1:]], check=check)
