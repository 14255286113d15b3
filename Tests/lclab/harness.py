"""The host tier's harness (Tests/integration, the VM lab, and bench/):
stores on loop files, test users, held sessions, the residue check, and
the reliability rows. Fixtures live in Tests/integration/conftest.py.

`assert_no_residue` is the shared proof that a logout left nothing behind.
"""
import contextlib
import functools
import ctypes
import glob
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
MODULE = os.environ.get("LC_MODULE", os.path.join(ROOT, ".build/release/pam_loginchroot.so"))
CLI = os.environ.get("LC_CLI", os.path.join(ROOT, ".build/release/loginchroot"))
# Debug builds act on the named crash steps (Sources/LoginChrootPlatform/CrashPoints.swift).
DEBUG_MODULE = os.environ.get("LC_DEBUG_MODULE", os.path.join(ROOT, ".build/debug/libloginchroot_pam.so"))
DEBUG_CLI = os.environ.get("LC_DEBUG_CLI", os.path.join(ROOT, ".build/debug/loginchroot"))
# What the reliability cases tried and what held, one JSON line each, for
# scripts/reliability-report.py (RELIABILITY.md).
RELIABILITY_LOG = os.environ.get("LC_RELIABILITY_LOG", os.path.join(ROOT, ".build/reliability/host.jsonl"))
USERS = ("lctest1", "lctest2")
# The VM lab (scripts/vmlab.sh) runs the same suite with LC_BACKENDS=dm-thin.
BACKENDS = tuple(os.environ.get("LC_BACKENDS", "btrfs overlay").split())
# The PAM services the real clients use; their files are swapped for tests
# and restored afterwards.
SYSTEM_SERVICES = ("su-l", "runuser-l", "login")


def run(cmd, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("errors", "replace")  # output may echo hostile bytes back
    kw.setdefault("timeout", 120 * TIME_SCALE)
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)  # a prompt never waits on the test's terminal
    result = subprocess.run(cmd, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


# The module's syslog, when the tests run their own syslogd (the syslog fixture sets it).
SYSLOG_FILE = None
# The VM lab emulates a CPU (no KVM): everything there takes several times longer.
TIME_SCALE = int(os.environ.get("LC_TIME_SCALE", "1"))
# How often the tests' looping shell scripts (one that forks all the time,
# one that waits for a file) start a process. Under emulation a process start
# costs about half a second of CPU, so there they loop more slowly.
SPAWN_INTERVAL = 0.05 if TIME_SCALE == 1 else 2


@contextlib.contextmanager
def private_syslog():
    """Where the machine has no syslog: a busybox syslogd writing to a file,
    whose path this yields (None where /dev/log is the machine's own)."""
    if os.path.exists("/dev/log"):
        yield None
        return
    log = tempfile.NamedTemporaryFile(prefix="lc-syslog-", suffix=".log", delete=False).name
    proc = subprocess.Popen(["busybox", "syslogd", "-n", "-O", log])
    for _ in range(50):
        if os.path.exists("/dev/log"):
            break
        time.sleep(0.05)
    try:
        yield log
    finally:
        proc.terminate()
        proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink("/dev/log")
        os.unlink(log)


def module_errors(lines):
    """The module's syslog lines that say something went wrong."""
    return [line for line in lines if re.search(r"\.(err|crit|warn\w*) |quarantined|could not|cannot", line)]


def syslog_mark():
    """Where the module's syslog ends now, for syslog_since."""
    return os.path.getsize(SYSLOG_FILE) if SYSLOG_FILE else 0


def syslog_since(mark, waiting_for=None):
    """What the module logged since syslog_mark() returned `mark`; None when
    /dev/log is the machine's own syslog (then the tests cannot read it).
    With `waiting_for`, gives syslogd up to 5 s to write that text."""
    if not SYSLOG_FILE:
        return None
    for _ in range(100):
        with open(SYSLOG_FILE, errors="replace") as f:
            f.seek(mark)
            logged = f.read()
        if waiting_for is None or waiting_for in logged:
            break
        time.sleep(0.05)
    return logged


@contextlib.contextmanager
def temporary_users(names):
    """The accounts `names` (made if missing, removed afterwards if made),
    each with its own group and home. Written straight into the account
    files: useradd takes seconds each in the VM lab, and the benchmark
    makes a hundred."""
    created = [name for name in names if not account_exists(name)]
    taken = {entry.pw_uid for entry in pwd.getpwall()} | {entry.gr_gid for entry in grp.getgrall()}
    ids = dict(zip(created, (n for n in range(61000, 65000) if n not in taken)))
    lines = {"/etc/passwd": [f"{n}:x:{i}:{i}::/home/{n}:/bin/sh\n" for n, i in ids.items()],
             "/etc/group": [f"{n}:x:{i}:\n" for n, i in ids.items()],
             "/etc/shadow": [f"{n}:*:19000:0:99999:7:::\n" for n in ids]}
    try:
        for path, added in lines.items():
            with open(path, "a") as f:
                f.writelines(added)
        for name, uid in ids.items():
            os.makedirs(f"/home/{name}", mode=0o755, exist_ok=True)
            os.chown(f"/home/{name}", uid, uid)
        yield {name: pwd.getpwnam(name) for name in names}
    finally:
        for uid in ids.values():
            run(["pkill", "-KILL", "-U", str(uid)], check=False)
        for path, added in lines.items():
            with open(path) as f:
                kept = [line for line in f if line not in added]
            with open(path, "w") as f:
                f.writelines(kept)
        for name in ids:
            shutil.rmtree(f"/home/{name}", ignore_errors=True)


def account_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Store:
    """A store of one backend on a loop file (btrfs) or a directory (overlay),
    with a config file and a test PAM service that uses it. "overlay-erofs"
    is the overlay backend with erofs generations ([overlay] lower = erofs)."""

    def __init__(self, backend, base):
        self.backend = backend
        self.erofs = backend == "overlay-erofs"
        self.base = base
        self.config = os.path.join(base, "etc", "loginchroot.conf")
        self.path = os.path.join(base, "store")
        self.state = os.path.join(base, "run")
        self.service = f"lctest-{os.path.basename(base)}"  # one per store: stores may coexist

    def cli(self, *args, check=True, debug=False, env=None):
        args = list(args)
        at = args.index("--") if "--" in args else len(args)
        return run([DEBUG_CLI if debug else CLI, *args[:at], "--config", self.config, *args[at:]], check=check,
                   env=env)

    @property
    def pool(self):
        """dm-thin: the prefix of this store's device-mapper names."""
        return "lct" + os.path.basename(self.base).split("-")[-1].replace("_", "")[:8]

    def thin_volumes(self):
        """dm-thin: the volume lines of the store's own metadata."""
        path = os.path.join(self.path, "thin-metadata")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [line.split()[1:] for line in f if line.startswith("volume ")]

    def metadata(self):
        """dm-thin: the store's own record: pool transaction, volume size, volumes."""
        with open(os.path.join(self.path, "thin-metadata")) as f:
            text = f.read()
        return {"transaction": int(re.search(r"^transaction (\d+)$", text, re.M).group(1)),
                "sectors": int(re.search(r"^sectors (\d+)$", text, re.M).group(1)),
                "volumes": {role: (int(thin_id), state) for thin_id, role, state in self.thin_volumes()}}

    def pool_status(self):
        """dm-thin: what the kernel says about the pool."""
        fields = run(["dmsetup", "status", f"{self.pool}-pool"]).stdout.split()
        # "0 SECTORS thin-pool TXID USED/TOTAL(meta) USED/TOTAL(data) HELD MODE ..."
        data_used, data_total = map(int, fields[5].split("/"))
        return {"transaction": int(fields[3]), "data_free_percent": 100 * (data_total - data_used) // data_total,
                "mode": fields[7]}

    def dm_devices(self, suspended_only=False):
        names = []
        for path in glob.glob("/sys/block/dm-*/dm/name"):
            # Removed while we looked: sysfs answers ENOENT, or EINVAL mid-removal
            # (the residue check looks again).
            with contextlib.suppress(OSError):
                if not suspended_only or open(os.path.join(os.path.dirname(path), "suspended")).read().strip() == "1":
                    names.append(open(path).read().strip())
        return sorted(n for n in names if n.startswith(self.pool + "-"))

    @contextlib.contextmanager
    def image_trees(self):
        """master and every generation, as directories to look into."""
        if self.erofs:  # each generation mounted once, under the state directory
            mounted = os.path.join(self.state, "generations")
            yield [os.path.join(self.path, "master")] + [os.path.join(mounted, g) for g in sorted(listdir(mounted))]
            return
        if self.backend != "dm-thin":
            stable = os.path.join(self.path, "stable")
            yield [os.path.join(self.path, "master")] + [os.path.join(stable, g) for g in sorted(os.listdir(stable))]
            return
        # Read-only views of the thin volumes, through test-only devices.
        # (Few processes: each costs a second or more in the VM lab.)
        sectors = self.metadata()["sectors"]
        views = {f"{self.pool}-view-{thin_id}": thin_id
                 for thin_id, role, _ in self.thin_volumes() if not role.startswith("session:")}
        spec = ";".join(f"{name},,,ro,0 {sectors} thin /dev/mapper/{self.pool}-pool {thin_id}"
                        for name, thin_id in views.items())
        mounts = []
        try:
            run(["dmsetup", "create", "--concise", spec])
            run(["dmsetup", "mknodes"])  # where no udev makes the nodes (the VM lab)
            for name in views:
                mounts.append(tempfile.mkdtemp(prefix="lc-view-"))
                mount(f"/dev/mapper/{name}", mounts[-1], "ext4", MS_RDONLY, "noload")
            yield mounts
        finally:
            for mnt in mounts:
                LIBC.umount2(mnt.encode(), 0)
                os.rmdir(mnt)
            run(["dmsetup", "remove", *views], check=False)

    @contextlib.contextmanager
    def unpublished(self):
        """The store as if no generation had been published."""
        if self.backend == "dm-thin":
            path = os.path.join(self.path, "thin-metadata")
            saved = open(path).read()
            with open(path, "w") as f:
                f.write("".join(l for l in saved.splitlines(True) if not l.startswith("current ")))
            try:
                yield
            finally:
                with open(path, "w") as f:
                    f.write(saved)
            return
        current = os.path.join(self.path, "current")
        os.rename(current, current + ".saved")
        try:
            yield
        finally:
            os.rename(current + ".saved", current)

    def session_dirs(self):
        """Session snapshots that exist on the backend."""
        if self.backend == "btrfs":
            return os.listdir(os.path.join(self.path, "sessions"))
        if self.backend == "dm-thin":
            return [role for _, role, _ in self.thin_volumes() if role.startswith("session:")] + \
                   [d for d in self.dm_devices() if "-session-" in d]
        return []

    def pam_lines(self, extra="", module=MODULE):
        # pam_permit after it, as in every real stack: a module that has
        # nothing to do returns PAM_IGNORE, and a stack of ignores fails.
        return f"session required {module} config={self.config}{extra}\nsession optional pam_permit.so\n"


def write_config(store, extra="", image_size="768M", pool_size="640M", root_size="256M"):
    os.makedirs(os.path.dirname(store.config), exist_ok=True)
    with open(store.config, "w") as f:
        f.write(f"""[store]
backend = {"overlay" if store.erofs else store.backend}
path = {store.path}
image = {store.base}/store.img
image_size = {image_size}
root_size = {root_size}

{"[overlay]" + chr(10) + "lower = erofs" + chr(10) if store.erofs else ""}
[dm-thin]
pool_name = {store.pool}
data_size = {pool_size}
metadata_size = 16M
volume_size = 256M

[session]
state_dir = {store.state}
kill_timeout = 5
# The VM lab's emulated CPU makes every root take several times longer.
lock_timeout = {15 * TIME_SCALE}
{extra}
""")
    os.chmod(store.config, 0o644)


def make_store(backend, image_dir, extra="", image_size="768M", pool_size="640M"):
    base = tempfile.mkdtemp(prefix=f"lc-{backend}-", dir="/var/lib")
    os.chmod(base, 0o755)
    store = Store(backend, base)
    write_config(store, extra, image_size, pool_size)
    store.cli("init", "--from-dir", image_dir)
    write_service(store)
    return store


def write_service(store, module=MODULE):
    with open(f"/etc/pam.d/{store.service}", "w") as f:
        f.write("auth required pam_permit.so\naccount required pam_permit.so\n" + store.pam_lines(module=module))


def destroy_store(store):
    # Reclaim whatever a failed test left, then take the store apart.
    store.cli("gc", check=False)
    for pin in listdir(os.path.join(store.state, "pins")):
        run(["umount", "-l", os.path.join(store.state, "pins", pin)], check=False)
    for generation in listdir(os.path.join(store.state, "generations")):  # erofs generations
        run(["umount", "-l", os.path.join(store.state, "generations", generation)], check=False)
    for mount in (os.path.join(store.state, "pins"), store.path):
        run(["umount", "-l", mount], check=False)
    if store.backend == "dm-thin":
        devices = store.dm_devices()
        for name in [d for d in devices if not d.endswith("-pool")] + [d for d in devices if d.endswith("-pool")]:
            run(["dmsetup", "remove", "--retry", name], check=False)
    if os.path.exists(f"/etc/pam.d/{store.service}"):
        os.unlink(f"/etc/pam.d/{store.service}")
    shutil.rmtree(store.base, ignore_errors=True)


def needs_backend(backend):
    return pytest.mark.skipif(backend not in BACKENDS, reason=f"{backend} only, and LC_BACKENDS is "
                              f"'{' '.join(BACKENDS)}' (the host tier runs it)")


@contextlib.contextmanager
def services_for(store):
    """Points su -l, runuser -l and login at this store's config; restores the
    distribution's files afterwards."""
    saved = {}
    for name in SYSTEM_SERVICES:
        path = f"/etc/pam.d/{name}"
        saved[name] = open(path).read() if os.path.exists(path) else None
        auth = "auth sufficient pam_rootok.so\nauth required pam_permit.so\n"
        with open(path, "w") as f:
            f.write(auth + "account required pam_permit.so\n" + store.pam_lines())
    try:
        yield
    finally:
        for name, text in saved.items():
            path = f"/etc/pam.d/{name}"
            if text is None:
                os.unlink(path)
            else:
                with open(path, "w") as f:
                    f.write(text)


def processes_of(uid):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue  # dead, waiting for a parent that may never reap it (the VM lab's init)
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append((int(pid), f.read().replace(b"\0", b" ").decode(errors="replace")))
        except (FileNotFoundError, ProcessLookupError):
            pass  # exited while we looked
    return found


def listdir(path):
    return os.listdir(path) if os.path.isdir(path) else []


def residue(store, users=USERS):
    """What sessions left behind: records, pins, mounts, snapshots, cgroups,
    processes; on dm-thin also a pool out of step with the store's record."""
    problems = []
    roots = listdir(os.path.join(store.state, "roots"))
    if [r for r in roots if not r.endswith(".tmp")]:
        problems.append(f"state records left: {roots}")
    pins = listdir(os.path.join(store.state, "pins"))
    if pins:
        problems.append(f"namespace pins left: {pins}")
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    leaked = [m for m in mounts if m.startswith(os.path.join(store.path, "sessions")) or m.startswith(os.path.join(store.state, "staging"))]
    if leaked:
        problems.append(f"mounts left: {leaked}")
    if store.session_dirs():
        problems.append(f"snapshots left: {store.session_dirs()}")
    cgroups = [os.path.join(parent, name) for parent, names, _ in os.walk(CGROUP2)
               for name in names if name.startswith("loginchroot-")]
    if cgroups:
        problems.append(f"cgroups left: {cgroups}")
    for name in users:
        procs = processes_of(pwd.getpwnam(name).pw_uid)
        if procs:
            problems.append(f"processes of {name} left: {procs}")
    if store.backend == "dm-thin":
        unsettled = [v for v in store.thin_volumes() if v[2] != "live"]
        if unsettled:
            problems.append(f"unsettled thin volumes: {unsettled}")
        recorded, actual = store.metadata()["transaction"], store.pool_status()["transaction"]
        if recorded != actual:
            problems.append(f"the store recorded pool transaction {recorded}, the pool is at {actual}")
        if store.dm_devices(suspended_only=True):
            problems.append(f"devices left suspended: {store.dm_devices(suspended_only=True)}")
    return problems


def settled_residue(store, users=USERS):
    """residue(), once a logout still in progress has had 10 s to finish."""
    deadline = time.time() + 10
    while (problems := residue(store, users)) and time.time() < deadline:
        time.sleep(0.2)
    return problems


def assert_no_residue(store, users=USERS):
    problems = settled_residue(store, users)
    assert not problems, "\n".join(problems)


LIBC = ctypes.CDLL(None, use_errno=True)
MS_RDONLY = 1


@contextlib.contextmanager
def small_filesystem(megabytes, project_quotas=False, verity=False):
    """A fresh ext4 on a loop file, mounted on a new directory (mode 0700);
    with `project_quotas`, made and mounted to enforce them; with `verity`,
    made with fs-verity (a kernel without it refuses the mount)."""
    base = tempfile.mkdtemp(prefix="lc-upper-", dir="/var/lib")
    image, mountpoint = os.path.join(base, "fs.img"), os.path.join(base, "mnt")
    os.mkdir(mountpoint)
    run(["truncate", "-s", f"{megabytes}M", image])
    features = ["quota,project"] * project_quotas + ["verity"] * verity
    # fs-verity on Linux 6.1 needs 4 KiB blocks, which mke2fs gives only from 512 MiB up.
    run(["mkfs.ext4", "-q"] + (["-O", ",".join(features)] if features else []) + ["-b", "4096"] * verity + [image])
    device = run(["losetup", "--find", "--show", image]).stdout.strip()
    try:
        mount(device, mountpoint, "ext4", 0, "prjquota" if project_quotas else "")
        os.chmod(mountpoint, 0o700)
        try:
            yield mountpoint
        finally:
            LIBC.umount2(mountpoint.encode(), 2)  # MNT_DETACH: a failed test may leave a user in it
    finally:
        run(["losetup", "-d", device], check=False)
        run(["rm", "-rf", base])


@functools.cache
def PROJECT_QUOTAS():
    """Whether this kernel enforces ext4 project quotas (this machine's has
    no CONFIG_QUOTA; the VM lab's Debian kernel has)."""
    try:
        with small_filesystem(16, project_quotas=True):
            return True
    except OSError:
        return False


NO_PROJECT_QUOTAS = ("this kernel has no project quotas (CONFIG_QUOTA, CONFIG_QFMT_V2), so a directory upper is "
                     "refused here (test_attacks checks that); the VM lab's kernel runs this")


def mount(source, target, fstype, flags, options):
    if LIBC.mount(source.encode(), target.encode(), fstype.encode(), flags, options.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}")


def cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    return "/sys/fs/cgroup"


CGROUP2 = cgroup2_mount()


def token():
    return uuid.uuid4().hex[:10]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def c_client(name):
    """A test PAM client from Tests/integration/NAME.c (built once; the VM
    lab hands in copies built on the host, as LC_NAME)."""
    built = os.environ.get(f"LC_{name.upper()}")
    if built:
        return built
    binary = os.path.join(tempfile.gettempdir(), f"lc-{name}-{os.getpid()}")
    if not os.path.exists(binary):
        run(["gcc", "-Wall", "-O2", "-o", binary, os.path.join(ROOT, f"Tests/integration/{name}.c"), "-lpam", "-lpthread"])
    return binary


def record(case, backend, tries, held, lost, measured="", problems=()):
    """One row of RELIABILITY.md, from this run. `lost` lists what did not
    survive (an empty list is "nothing"); `problems`, what did not hold."""
    os.makedirs(os.path.dirname(RELIABILITY_LOG), exist_ok=True)
    with open(RELIABILITY_LOG, "a") as f:
        f.write(json.dumps({"case": case, "backend": backend, "tries": tries, "held": held,
                            "lost": sorted(set(lost)), "measured": measured, "problems": list(problems)[:5],
                            "tier": "lab" if TIME_SCALE > 1 else "host",
                            "when": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


class Canaries:
    """Files on the host (in /tmp and a user's home) whose loss or change
    a test would see: the host data a crash or an escape must never touch."""

    def __init__(self, home):
        self.files = {}
        for directory in ("/tmp", home):
            path = os.path.join(directory, f"lc-canary-{token()}")
            with open(path, "wb") as f:
                f.write(os.urandom(4096))
            self.files[path] = self.digest(path)
        self.mounts = self.host_mounts()

    @staticmethod
    def host_mounts():
        """The host's mount points, but erofs generations (STATE/generations/gen-N),
        which publish and gc mount and unmount as their work."""
        with open("/proc/self/mountinfo") as f:
            return sorted(m for m in (line.split()[4] for line in f) if not re.search(r"/generations/gen-\d+$", m))

    @staticmethod
    def digest(path):
        try:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return None

    def lost(self):
        """What changed: canary files, and host mounts gained or lost."""
        lost = [path for path, digest in self.files.items() if self.digest(path) != digest]
        mounts = self.host_mounts()
        if mounts != self.mounts:
            lost.append(f"host mount table ({len(self.mounts)} mounts before, {len(mounts)} after)")
        return lost

    def remove(self):
        for path in self.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class HeldSession:
    """A live session of `user` in a long-running PAM client (pamclient.c):
    its shell runs `before`, waits until finish(), then runs `after`. The
    wait blocks on a FIFO whose write end the test holds: no polling, since
    process starts are dear in the VM lab."""

    def __init__(self, store, user, before="", after=""):
        self.fifo = os.path.join(tempfile.mkdtemp(prefix="lc-hold-", dir="/tmp"), "release")
        os.chmod(os.path.dirname(self.fifo), 0o755)
        os.mkfifo(self.fifo, 0o644)
        self.writer = os.open(self.fifo, os.O_RDWR)
        self.proc = subprocess.Popen([c_client("pamclient"), store.service, user, "1",
                                      f"{before}\ncat {self.fifo} >/dev/null\n{after}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_until_in(self, store):
        wait_until_in(store, [self])

    def release(self):
        if self.writer is not None:
            os.close(self.writer)
            self.writer = None

    def finish(self):
        """(exit status, output) once the session has ended."""
        self.release()
        deadline = time.time() + 120 * TIME_SCALE
        try:
            while self.proc.poll() is None and time.time() < deadline:
                # Its shell may open the FIFO only now, after the write end closed.
                with contextlib.suppress(OSError):
                    os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
            out, err = self.proc.communicate()
        finally:
            shutil.rmtree(os.path.dirname(self.fifo), ignore_errors=True)
        return self.proc.returncode, out + err


def wait_until_in(store, sessions):
    """Returns once the module has recorded every HeldSession in its root."""
    for _ in range(600 * TIME_SCALE):
        roots = json.loads(store.cli("sessions", "--json").stdout)
        # Active: a root is recorded with its first session before it is built.
        members = {member["pid"] for root in roots if root["phase"] == "active" for member in root["sessions"]}
        if all(session.proc.pid in members for session in sessions):
            return
        ended = [session for session in sessions if session.proc.poll() is not None]
        if ended:
            raise AssertionError(f"a held session ended: {ended[0].finish()}")
        time.sleep(0.1)
    raise AssertionError("the held sessions never all started")


def pamtester(store, user, *ops, check=True, env=None):
    return run(["pamtester", "-v", store.service, user, *ops], check=check, env=env)


def in_root(store, key, user, script):
    """Runs `script` as `user` inside root `key`'s namespace (what a login
    shell of that root would do)."""
    account = pwd.getpwnam(user)
    return run(["nsenter", f"--mount={store.state}/pins/{key}", f"--setuid={account.pw_uid}",
                f"--setgid={account.pw_gid}", "env", f"HOME={account.pw_dir}", "sh", "-c", script])
