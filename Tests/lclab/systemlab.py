"""The full-system lab's machine: a Debian 12 system (scripts/fullsystem-image.sh)
booted under qemu with systemd as PID 1, driven from this machine over ssh
(a port forwarded on 127.0.0.1 only; the guest has no other network) and
over its serial console (pexpect); and the package installed on it as an
admin installs it. Used by the full-system tier (conftest.py) and by
`make bench` (bench/bench.py).
"""
import contextlib
import glob
import json
import os
import socket
import subprocess
import time

import pexpect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
LAB = os.environ.get("LC_FULLSYSTEM_DIR", os.path.join(ROOT, ".build/fullsystem"))
CONFIG = "/etc/loginchroot/loginchroot.conf"
USERS = ("lcfs1", "lcfs2")  # made by the image script, with PASSWORD
PASSWORD = "lcfs"
MARKER = "/run/loginchroot-session"  # in every root (RootMarker.path)
# Where a session's user writes to the root's own filesystem: /run/lock is
# world-writable and, in a root, a directory of the snapshot (no bind, no
# tmpfs); on the host it is a tmpfs of its own.
ROOT_WRITE = "/run/lock/lc-root-write"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Machine:
    def __init__(self, directory, kernel_arguments=""):
        self.directory = directory
        self.port = free_port()
        self.key = os.path.join(directory, "id_ed25519")
        self.options = ["-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "ConnectTimeout=20", "-i", self.key]
        disk = os.path.join(directory, "run.qcow2")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(disk)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "system.img", "-F", "raw", disk], check=True,
                       cwd=directory)
        for name, size in (("data.disk", "4G"), ("meta.disk", "64M")):  # the thin pool's disks
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            subprocess.run(["truncate", "-s", size, path], check=True)
        kernel = open(os.path.join(directory, "kernel")).read().strip()
        self.log = open(os.path.join(directory, "console.log"), "w")
        started = time.monotonic()
        self.console = pexpect.spawn(
            "qemu-system-x86_64",
            ["-m", "2G", "-smp", "2", "-nographic", "-kernel", f"/boot/vmlinuz-{kernel}",
             "-initrd", f"/boot/initrd.img-{kernel}", "-append", f"root=/dev/vda rw console=ttyS0 quiet {kernel_arguments}".strip(),
             "-drive", f"file={disk},if=virtio,format=qcow2",
             "-drive", f"file={os.path.join(directory, 'data.disk')},if=virtio,format=raw",
             "-drive", f"file={os.path.join(directory, 'meta.disk')},if=virtio,format=raw",
             "-nic", f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
             "-serial", "mon:stdio"],
            encoding="utf-8", codec_errors="replace", timeout=600, logfile=self.log)
        self.wait_until_up()
        self.boot_seconds = time.monotonic() - started

    def wait_until_up(self):
        self.console.expect("lcfull login:", timeout=600)
        deadline = time.monotonic() + 300
        while self.ssh("root", "systemctl is-system-running --wait", check=False, timeout=300).returncode == 255:
            if time.monotonic() > deadline:
                raise AssertionError("ssh never came up")
            time.sleep(2)

    def ssh(self, user, command, check=True, tty=False, timeout=300, input=None):
        result = subprocess.run(["ssh", *self.options, "-p", str(self.port), *(["-tt"] if tty else []), f"{user}@127.0.0.1", command],
                                capture_output=True, text=True, errors="replace", timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {user}: {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def ssh_in_background(self, user, command):
        return subprocess.Popen(["ssh", *self.options, "-p", str(self.port), f"{user}@127.0.0.1", command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def root(self, command, **kw):
        return self.ssh("root", command, **kw).stdout

    def copy_in(self, path, target):
        subprocess.run(["scp", *self.options, "-P", str(self.port), path, f"root@127.0.0.1:{target}"], check=True, timeout=300)

    def reboot(self):
        started = time.monotonic()
        self.ssh("root", "systemctl reboot", check=False, timeout=60)
        self.wait_until_up()
        return time.monotonic() - started

    def stop(self):
        if self.console.isalive():
            self.ssh("root", "systemctl poweroff", check=False, timeout=60)
            with contextlib.suppress(pexpect.EOF, pexpect.TIMEOUT):
                self.console.expect(pexpect.EOF, timeout=120)
            self.console.terminate(force=True)
        self.log.close()


def boot(selinux=False):
    """Builds the image (or takes the cached one) and boots it; with
    `selinux`, the labelled variant with SELinux on, permissive (its own
    directory: the two disks are built and cached side by side)."""
    directory = LAB + "-selinux" if selinux else LAB
    subprocess.run(["bash", os.path.join(ROOT, "scripts/fullsystem-image.sh"), directory,
                    *(["selinux"] if selinux else [])], check=True)
    return Machine(directory, "security=selinux enforcing=0 audit=1 audit_backlog_limit=8192" if selinux else "")


def console_login(machine, user, password, command, while_open=lambda: None):
    """Logs `user` in on the serial console (agetty, then login with a
    password), runs `command` there and calls `while_open()`, then logs out.
    Returns what the command printed and what while_open returned."""
    console = machine.console
    console.sendline("")
    console.expect("login:", timeout=120)
    console.sendline(user)
    console.expect("Password:", timeout=120)
    console.sendline(password)
    console.expect(r"\$ ", timeout=300)
    console.sendline(f"{command}; echo console-$((6*7))")
    console.expect("console-42", timeout=120)
    shown = console.before.decode(errors="replace") if isinstance(console.before, bytes) else console.before
    seen = while_open()
    console.sendline("exit")
    console.expect("login:", timeout=300)
    return shown, seen


def wait_for(condition, seconds=120):
    """Whether `condition()` came true within `seconds` (asked every 2 s)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


def roots_after_logout(machine, seconds=60):
    """What `loginchroot sessions` says once the user manager, a session of
    the root too, has stopped (UserStopDelaySec, 10 s after the last
    logout) and its ExecStopPost gc has run."""
    wait_for(lambda: machine.root("loginchroot sessions").strip() == "no open session roots", seconds)
    return machine.root("loginchroot sessions").strip()


def newest_package():
    debs = sorted(glob.glob(os.path.join(ROOT, ".build/deb/loginchroot_*_amd64.deb")), key=os.path.getmtime)
    assert debs, "no package: run 'make deb' first"
    return debs[-1]


def install_package(machine):
    machine.copy_in(newest_package(), "/root/loginchroot.deb")
    machine.root("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /root/loginchroot.deb")


def make_store(machine):
    """A dm-thin store on the two virtio disks (the lab's Debian 6.1 kernel
    has no btrfs simple quotas), master from the image's golden.tar."""
    machine.root(f"sed -i -e 's/^backend = .*/backend = dm-thin/' -e 's|^data_device =.*|data_device = /dev/vdb|' "
                 f"-e 's|^metadata_device =.*|metadata_device = /dev/vdc|' -e 's/^volume_size = .*/volume_size = 1G/' "
                 f"{CONFIG}")
    machine.root("loginchroot init --from-tar /root/golden.tar", timeout=1200)


def enable_module(machine, enabled=True):
    machine.root(f"DEBIAN_FRONTEND=noninteractive pam-auth-update --{'enable' if enabled else 'disable'} loginchroot")


def pam_digests(machine):
    return machine.root("cd /etc/pam.d && sha256sum * | sort")


def host_namespace(machine):
    return machine.root("readlink /proc/1/ns/mnt").strip()


# The full-system tier's rows of RELIABILITY.md (the SELinux tier has its own file).
SYSTEM_RELIABILITY_LOG = os.environ.get("LC_RELIABILITY_LOG", os.path.join(ROOT, ".build/reliability/system.jsonl"))


def record_system(case, tries, held, measured="", problems=()):
    """One row of the full-system tier."""
    record(SYSTEM_RELIABILITY_LOG, "system", case, tries, held, measured, problems)


def record(log, tier, case, tries, held, measured="", problems=()):
    """One row of RELIABILITY.md (scripts/reliability-report.py), in `log`."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as f:
        f.write(json.dumps({"case": case, "backend": "dm-thin", "tries": tries, "held": held, "lost": [],
                            "measured": measured, "problems": list(problems)[:5], "tier": tier,
                            "when": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
