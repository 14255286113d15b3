"""The real PAM clients the tests and bench/ log in with. Each has
run(store, user, script) -> output (login, script, logout) and
start(store, user, script) -> a handle with wait(), for a session that stays
open in the background; sshd's also setup(store) and teardown()."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pexpect

from lclab.harness import TIME_SCALE, c_client, free_port, run


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
