#!/usr/bin/env python3
"""`make bench`: login and logout latency of loginchroot, side by side with
the tools an admin would otherwise use, in one run; writes BENCHMARKS.md.

Run from the repository with PYTHONPATH=Tests (the shared harness, lclab),
as `make bench` does:

    bench.py [--cycles N] [--skip-lab]   host part, the VM lab part, the report
    bench.py measure host|lab|system OUT.json   one part (the lab part runs
                                         in the VM lab; system boots the full-system lab)
    bench.py report OUT.md JSON...       the report from parts already measured
    bench.py selinux-section | images-section | fleet-section   one comparison
                                         alone, its section(s) of BENCHMARKS.md replaced

Every figure of a comparison comes from the same run, measured in
interleaved rounds so that a noisy stretch of the machine hits both sides.
The report gives percentiles and ratios of medians; see bench/report.py.
This is a benchmark, not a test: nothing here passes or fails on a timing.
"""
import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
import report
from lclab import harness as kit  # the test harness's stores, users and held sessions
from lclab import fleet as fleet_kit  # keys, a network namespace and a web server for the fleet
from lclab import systemlab  # the full-system lab: a booted Debian 12 with systemd
from lclab.clients import SshClient

SCALES = (1, 10, 100)  # sessions of other users held open while measuring
CROWD = report.CROWD  # processes one held session of another user runs, in a row of its own
ROUNDS = 4  # the cycles of each comparison are split into this many interleaved rounds
BENCH_USERS = [f"lcb{i:03d}" for i in range(1 + max(SCALES))]  # the measured one, then those held open
LARGE_PAYLOAD = ("usr/share/doc", "usr/share/locale", "usr/share/man")  # about 350 MiB in 34,000 files
# Cold ssh logins per side on the full system: each waits for the previous
# one's user manager to stop (UserStopDelaySec, 10 s) and its root to go.
SYSTEM_CYCLES = 12
SELINUX_CYCLES = 8  # two boots, each with the package installed and a store made
# Under emulation every file copied into the pool costs: the lab's large image is smaller.
LAB_LARGE_PAYLOAD = ("usr/share/man",)
LAB_ANCHOR_CYCLES = ROUNDS
PUBLISHES = 6  # per side, alternating, for the erofs comparison


def progress(message):
    print(f"bench {time.strftime('%H:%M:%S')}: {message}", flush=True)


def build(name, *flags):
    """bench/NAME.c, compiled once (the VM lab gets copies built on the host,
    in LC_BENCH_BIN: a compiler is slow under emulation)."""
    if os.environ.get("LC_BENCH_BIN"):
        return os.path.join(os.environ["LC_BENCH_BIN"], name)
    binary = os.path.join(tempfile.gettempdir(), f"lcbench-{name}-{os.getpid()}")
    if not os.path.exists(binary):
        kit.run(["gcc", "-O2", "-Wall", "-Wno-unused-function", "-Wno-format-truncation", "-o", binary,
                 os.path.join(HERE, f"{name}.c"), *flags])
    return binary


def json_of(cmd, **kw):
    return json.loads(kit.run(cmd, timeout=3600, **kw).stdout)


def timed(cmd):
    """Wall time of one command, in ns."""
    start = time.monotonic_ns()
    kit.run(cmd)
    return time.monotonic_ns() - start


@contextlib.contextmanager
def module_syslog(keep_as):
    """A syslogd for the module's lines where the machine has none (the VM
    lab): a refused cycle's reason is only there. On an error, the module's
    errors and last lines are printed and the whole log is kept as
    `keep_as`, before the error propagates."""
    with kit.private_syslog() as log:
        try:
            yield
        except BaseException:
            if log:
                with open(log, errors="replace") as f:
                    lines = [line for line in f if "loginchroot" in line]
                shutil.copy(log, keep_as)
                print("bench: the module's errors:\n" + "".join(kit.module_errors(lines)[:40])
                      + "its last syslog lines:\n" + "".join(lines[-20:]), file=sys.stderr, flush=True)
            raise


def tree_size(path):
    files, size = 0, 0
    for parent, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(parent, name)).st_size
                files += 1
    return {"files": files, "mib": round(size / 2**20, 1)}


@contextlib.contextmanager
def images(payload=LARGE_PAYLOAD):
    """The small image (the tests' busybox root) and a large one: the same
    plus `payload`, directories of the host's /usr/share."""
    if os.environ.get("LC_BENCH_IMAGES_DISK"):  # made on the host for the VM lab
        mountpoint = tempfile.mkdtemp(prefix="lcbench-images-")
        kit.run(["mount", "-o", "ro", os.environ["LC_BENCH_IMAGES_DISK"], mountpoint])
        try:
            yield {name: os.path.join(mountpoint, name) for name in ("small", "large")}
        finally:
            kit.run(["umount", mountpoint], check=False)
            os.rmdir(mountpoint)
        return
    base = tempfile.mkdtemp(prefix="lcbench-images-", dir="/var/lib")
    small, large = os.path.join(base, "small"), os.path.join(base, "large")
    try:
        kit.run(["sh", os.path.join(ROOT, "scripts/make-image.sh"), small])
        kit.run(["cp", "-a", small, large])
        for sub in payload:
            os.makedirs(os.path.join(large, os.path.dirname(sub)), exist_ok=True)
            kit.run(["cp", "-a", "/" + sub, os.path.join(large, sub)], timeout=3600)
        yield {"small": small, "large": large}
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Measurement:
    """begin/end samples of one tool on one backend, image and load."""

    def __init__(self, results, tool, backend, image, open_sessions=0, note="", other_processes=0):
        self.row = {"tool": tool, "backend": backend, "image": image, "open_sessions": open_sessions,
                    "other_processes": other_processes, "note": note, "begin_ns": [], "end_ns": [], "failed": 0}
        results.append(self.row)

    def add(self, begins, ends, failed=0):
        self.row["begin_ns"] += begins
        self.row["end_ns"] += ends
        self.row["failed"] += failed


def loginchroot_cycles(measurement, service, user, cycles):
    out = json_of([build("benchclient", "-lpam", "-ldl"), "cycles", service, user, str(cycles)], check=False)
    measurement.add(out["open_ns"], out["close_ns"], out["failed"])


@contextlib.contextmanager
def held_sessions(store, users, before=""):
    sessions = [kit.HeldSession(store, user, before=before) for user in users]
    try:
        kit.wait_until_in(store, sessions)
        yield
    finally:
        for session in sessions:
            session.release()
        for session in sessions:
            session.finish()


def current_generation_path(store):
    status = json.loads(store.cli("status", "--json").stdout)
    return os.path.join(store.path, "stable", status["current"])


class Schroot:
    """A schroot chroot of one type over the store's current generation,
    with schroot's default profile (which binds /proc, /sys, /dev, /home and
    /tmp and copies the account databases: about what loginchroot does)."""

    def __init__(self, name, settings):
        self.name = name
        self.path = f"/etc/schroot/chroot.d/{name}"
        with open(self.path, "w") as f:
            f.write(f"[{name}]\ndescription=loginchroot benchmark anchor\nusers=root\nroot-users=root\n"
                    "profile=default\n" + "".join(f"{k}={v}\n" for k, v in settings.items()))
        self.sessions = 0

    def cycles(self, measurement, count):
        begins, ends = [], []
        for _ in range(count):
            self.sessions += 1
            session = f"{self.name}-{self.sessions}"
            begins.append(timed(["schroot", "--begin-session", "-c", self.name, "-n", session]))
            ends.append(timed(["schroot", "--end-session", "-c", session]))
        measurement.add(begins, ends)

    def remove(self):
        os.unlink(self.path)


def floor_cycles(measurement, args, count):
    out = json_of([build("rawfloor", *(["-DWITH_DEVMAPPER", "-ldevmapper"] if args[0] == "dm-thin" else [])),
                   *args, str(count)])
    measurement.add(out["begin_ns"], out["end_ns"])


def anchor_cycles(cycles):
    """The anchors (schroot, LVM) take a second or more a cycle: they run a
    quarter of loginchroot's cycles, which still gives a stable median."""
    return max(ROUNDS, cycles // 4)


def interleaved(*runs):
    """Runs each (cycles, run) of `runs` as run(cycles / ROUNDS), ROUNDS
    times, alternating between them."""
    for _ in range(ROUNDS):
        for cycles, run in runs:
            run(-(-cycles // ROUNDS))


def machine():
    def version(cmd):
        try:
            result = subprocess.run(cmd, capture_output=True, text=True)
        except OSError:
            return "not installed"
        return " ".join((result.stdout or result.stderr).split()[:6])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1),
            "loginchroot": commit, "schroot": version(["schroot", "--version"]),
            "lvm": version(["lvm", "version"]), "openssh": version(["ssh", "-V"]),
            "emulated": kit.TIME_SCALE > 1, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def measure_host(out_path, cycles):
    results, extra = [], {}
    with module_syslog(out_path + ".syslog"), kit.temporary_users(BENCH_USERS), images() as trees:
        users = BENCH_USERS
        extra["images"] = {name: tree_size(path) for name, path in trees.items()}
        for backend in ("btrfs", "overlay"):
            for image, tree in trees.items():
                store = kit.make_store(backend, tree, image_size="2G")
                try:
                    measure_store(results, extra, store, backend, image, users, cycles)
                finally:
                    kit.destroy_store(store)
        extra["load"] = measure_load(50)
        extra["erofs"] = measure_erofs(cycles, trees, users)
        extra["fleet"] = measure_fleet(trees)
    with open(out_path, "w") as f:
        json.dump({"machine": machine(), "results": results, **extra}, f)


def measure_store(results, extra, store, backend, image, users, cycles):
    user = users[0]
    progress(f"{backend}, {image} image")
    ours = Measurement(results, "loginchroot", backend, image)
    generation = current_generation_path(store)
    work = tempfile.mkdtemp(prefix="lcbench-floor-", dir=store.path if backend == "btrfs" else "/var/lib")
    floor = Measurement(results, "raw floor", backend, image)
    floor_args = [backend, generation, work]
    anchor = Measurement(results, "schroot", backend, image,
                         note="btrfs-snapshot" if backend == "btrfs" else "directory, union-type=overlay")
    union = None
    if backend == "btrfs":
        schroot = Schroot(f"lcbench-{backend}", {"type": "btrfs-snapshot", "btrfs-source-subvolume": generation,
                                                 "btrfs-snapshot-directory": work})
    else:
        union = tempfile.mkdtemp(prefix="lcbench-union-", dir="/var/lib")
        schroot = Schroot(f"lcbench-{backend}", {"type": "directory", "directory": generation,
                                                 "union-type": "overlay", "union-overlay-directory": union})
    try:
        loginchroot_cycles(Measurement([], "warm-up", backend, image), store.service, user, 5)
        interleaved((cycles, lambda n: loginchroot_cycles(ours, store.service, user, n)),
                    (anchor_cycles(cycles), lambda n: schroot.cycles(anchor, n)),
                    (cycles, lambda n: floor_cycles(floor, floor_args, n)))
    finally:
        schroot.remove()
        for directory in (work, union):
            if directory:
                shutil.rmtree(directory, ignore_errors=True)
    measure_scale(results, store, backend, image, users, cycles)
    if image == "small":
        extra.setdefault("ssh", []).append(measure_ssh(store, backend, user, max(20, cycles // 4)))
        measure_memory(extra, store, backend, user)


def measure_scale(results, store, backend, image, users, cycles):
    for held in SCALES:
        progress(f"{backend}, {image} image, {held} held open")
        with held_sessions(store, users[1:held + 1]):
            loginchroot_cycles(Measurement(results, "loginchroot", backend, image, held), store.service, users[0], cycles)
    # The logout's kill must not cost more the more the machine runs.
    progress(f"{backend}, {image} image, 1 held open running {CROWD} processes")
    with held_sessions(store, users[1:2], before=f"for i in $(seq {CROWD}); do sleep 3600 & done"):
        loginchroot_cycles(Measurement(results, "loginchroot", backend, image, 1, other_processes=CROWD),
                           store.service, users[0], cycles)


def measure_memory(extra, store, backend, user):
    extra.setdefault("memory", []).append(
        {"backend": backend, **json_of([build("benchclient", "-lpam", "-ldl"), "memory", store.service, user])})


def measure_erofs(cycles, trees, users):
    """Erofs generations against a directory lower, on the overlay backend
    and the same image: publish time and the disk one generation takes
    (PUBLISHES each, alternating), and login+logout cycles (interleaved)."""
    found = []
    for image, tree in trees.items():
        stores = {lower: kit.make_store("overlay-erofs" if lower == "erofs" else "overlay", tree, image_size="2G")
                  for lower in ("directory", "erofs")}
        try:
            row = {"image": image, "publish_ns": {}, "generation_bytes": {}, "login_ns": {}}
            for _ in range(PUBLISHES):
                for lower, store in stores.items():
                    progress(f"erofs against directory, {image} image: publish, {lower} lower")
                    row["publish_ns"].setdefault(lower, []).append(timed([kit.CLI, "publish", "--config", store.config]))
                    store.cli("gc")  # two generations kept: the disk stays bounded
            for lower, store in stores.items():
                row["generation_bytes"][lower] = disk_bytes(current_generation_path(store) + (".erofs" if store.erofs else ""))
            progress(f"erofs against directory, {image} image: login cycles")
            logins = {lower: Measurement([], "loginchroot", lower, image) for lower in stores}
            interleaved(*[(cycles, lambda n, lower=lower, store=store:
                           loginchroot_cycles(logins[lower], store.service, users[0], n))
                          for lower, store in stores.items()])
            row["login_ns"] = {lower: totals_of(m.row) for lower, m in logins.items()}
            found.append(row)
        finally:
            for store in stores.values():
                kit.destroy_store(store)
    return found


def measure_fleet(trees):
    """Fleet delivery on the large image: `publish --export` against a plain
    `publish` of the same master (alternating), then two login stores
    pulling from a web server on 127.0.0.1 in a network namespace (one
    with directory generations, one with erofs ones): the first pull
    (every object) and the next commit's (its static delta), timed, with
    the bytes the server sent."""
    keys = fleet_kit.Keys("loginchroot bench")
    build_host = kit.make_store("overlay", trees["large"], image_size="4G",
                                extra=f"\n[fleet]\nsigning_key = {keys.fingerprint}\ngpg_home = {keys.home}\n")
    repository = os.path.join(build_host.base, "repo")
    found = {"image": "large", "publish_ns": [], "export_ns": []}
    try:
        for _ in range(3):
            progress("fleet: publish, then publish --export")
            found["publish_ns"].append(timed([kit.CLI, "publish", "--config", build_host.config]))
            found["export_ns"].append(timed([kit.CLI, "publish", "--export", repository, "--config", build_host.config]))
            build_host.cli("gc")
        with fleet_kit.network_namespace() as netns:
            server = fleet_kit.RepoServer(netns, repository, os.path.join(build_host.base, "requests.jsonl"))
            machines = {lower: kit.make_store(backend, trees["small"], extra=f"\n[fleet]\nurl = {server.url}\n"
                                                                           f"keyring = {keys.public}\n")
                        for lower, backend in (("directory", "overlay"), ("erofs", "overlay-erofs"))}
            try:
                server.start()
                for kind in ("first", "delta"):
                    if kind == "delta":
                        with open(os.path.join(build_host.path, "master", "etc", "fleet-bench"), "w") as f:
                            f.write("the next commit\n")
                        kit.run([kit.CLI, "publish", "--export", repository, "--config", build_host.config])
                    for lower, machine in machines.items():
                        progress(f"fleet: update --pull, {kind}, {lower} lower")
                        sent = len(server.requests())
                        start = time.monotonic_ns()
                        pulled = fleet_kit.pull(netns, kit.CLI, machine)
                        found[f"pull_{kind}_{lower}_ns"] = time.monotonic_ns() - start
                        assert pulled.returncode == 0, pulled.stderr
                        found[f"pull_{kind}_{lower}_bytes"] = sum(r["bytes"] for r in server.requests()[sent:])
            finally:
                server.stop()
                for machine in machines.values():
                    kit.destroy_store(machine)
    finally:
        kit.destroy_store(build_host)
        keys.remove()
    return [found]


def disk_bytes(path):
    """What `path` (a file, or a tree on one filesystem) takes on disk."""
    return int(kit.run(["du", "-s", "-x", "-B1", path]).stdout.split()[0])


def totals_of(row):
    return [b + e for b, e in zip(row["begin_ns"], row["end_ns"])]


def measure_ssh(store, backend, user, cycles):
    """Connect to first output of `ssh user@host echo`, with the module in
    sshd's session stack and, alternately, without it (the anchor)."""
    client = SshClient()
    client.setup(store)
    if user != "lctest1":  # the account SshClient authorized
        shutil.copy(f"{client.dir}/authorized_keys.lctest1", f"{client.dir}/authorized_keys.{user}")
    samples = {"loginchroot": [], "without": []}
    with_module = open(client.service_file).read()
    without = "".join(line for line in with_module.splitlines(True) if "loginchroot" not in line) + \
        "session required pam_permit.so\n"
    try:
        command = client.command(user, "echo ready")
        for i in range(2 * cycles):
            side = "loginchroot" if i % 2 == 0 else "without"
            with open(client.service_file, "w") as f:
                f.write(with_module if side == "loginchroot" else without)
            start = time.monotonic_ns()
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            first = proc.stdout.readline()
            elapsed = time.monotonic_ns() - start
            proc.communicate(timeout=60 * kit.TIME_SCALE)
            if first.strip() == b"ready" and proc.returncode == 0:
                samples[side].append(elapsed)
    finally:
        client.teardown()
    return {"backend": backend, **samples, "cycles": cycles}


def measure_load(count):
    """dlopen time of the module, each in a fresh process, and of a C module
    (pam_permit) as the anchor."""
    client = build("benchclient", "-lpam", "-ldl")
    permit = next(p for p in ("/lib/x86_64-linux-gnu/security/pam_permit.so", "/usr/lib/x86_64-linux-gnu/security/pam_permit.so")
                  if os.path.exists(p))
    samples = {"loginchroot": [], "pam_permit": []}
    for _ in range(count):
        for name, module in (("loginchroot", kit.MODULE), ("pam_permit", permit)):
            samples[name].append(json_of([client, "load", module]))
    return samples

# LVM in the VM lab, where no udev runs: LVM makes its own device nodes.
LVM_LOCAL_CONF = """activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
devices { obtain_device_list_from_udev = 0 }
global { use_lvmpolld = 0 }
"""


class LvmVolumes:
    """The LVM anchors' volumes, on a loop file: a thin pool with a thin
    volume holding the image (for lvcreate -s), and a classic volume holding
    it too (for schroot's lvm-snapshot type)."""

    GROUP = "lcbench"

    def __init__(self, image, base):
        with open("/etc/lvm/lvmlocal.conf", "w") as f:
            f.write(LVM_LOCAL_CONF)
        self.file = os.path.join(base, "lvm.img")
        self.mnt = tempfile.mkdtemp(prefix="lcbench-lvm-", dir=base)
        kit.run(["truncate", "-s", "1600M", self.file])
        self.loop = kit.run(["losetup", "-f", "--show", self.file]).stdout.strip()
        kit.run(["vgcreate", "-qq", self.GROUP, self.loop])
        kit.run(["lvcreate", "-qq", "-L", "640M", "-T", f"{self.GROUP}/pool"])
        kit.run(["lvcreate", "-qq", "-V", "512M", "-T", f"{self.GROUP}/pool", "-n", "thin"])
        kit.run(["lvcreate", "-qq", "-L", "512M", "-n", "classic", self.GROUP])
        for volume in ("thin", "classic"):
            kit.run(["mkfs.ext4", "-q", self.device(volume)])
            kit.mount(self.device(volume), self.mnt, "ext4", 0, "")
            kit.run(["cp", "-a", image + "/.", self.mnt], timeout=3600)
            kit.run(["umount", self.mnt])

    def device(self, volume):
        return f"/dev/{self.GROUP}/{volume}"

    def thin_snapshot_cycles(self, measurement, count):
        """What an admin's script would do with LVM: snapshot the thin
        volume, activate and mount it; unmount it and remove it."""
        begins, ends = [], []
        for _ in range(count):
            begins.append(timed(["sh", "-c", f"lvcreate -qq -s -K -n snap {self.GROUP}/thin && "
                                 f"mount {self.device('snap')} {self.mnt}"]))
            ends.append(timed(["sh", "-c", f"umount {self.mnt} && lvremove -qq -f {self.GROUP}/snap"]))
        measurement.add(begins, ends)

    def remove(self):
        kit.run(["umount", self.mnt], check=False)
        kit.run(["vgremove", "-qq", "-f", self.GROUP], check=False)
        kit.run(["losetup", "-d", self.loop], check=False)
        os.unlink(self.file)


def measure_lab(out_path, cycles):
    """dm-thin, in the VM lab: loginchroot and the raw floor on both images;
    lvcreate -s, schroot's lvm-snapshot, scale and memory on the small one.
    Under emulation an LVM anchor cycle takes seconds (measured: about 1.3 s
    for lvcreate -s and lvremove, 10 s for schroot's lvm-snapshot, whose
    setup scripts run while it is mounted), so the anchors run
    LAB_ANCHOR_CYCLES, one per round."""
    results, extra = [], {}
    with module_syslog(out_path + ".syslog"), kit.temporary_users(BENCH_USERS), images() as trees:
        users = BENCH_USERS
        for image, tree in trees.items():
            progress(f"dm-thin, {image} image: making the store")
            # Each open dm-thin root took about 6 MiB of the pool (its ext4's
            # mount and the module's writes, at the pool's block size): 100
            # held roots need more than the tests' 640 MiB above min_free.
            # (The pool's loop files are in the guest's RAM: run_lab gives
            # the guest 8 GiB.)
            store = kit.make_store("dm-thin", tree, pool_size="2G")
            lvm = schroot = None
            try:
                metadata = open(os.path.join(store.path, "thin-metadata")).read()
                current = re.search(r"^current (\S+)$", metadata, re.M).group(1)
                origin = store.metadata()["volumes"][current][0]
                work = tempfile.mkdtemp(prefix="lcbench-floor-", dir=store.base)
                floor_args = ["dm-thin", f"{store.pool}-pool", str(origin), str(store.metadata()["sectors"]), "ext4", work]
                ours = Measurement(results, "loginchroot", "dm-thin", image)
                floor = Measurement(results, "raw floor", "dm-thin", image)
                runs = [(cycles, lambda n: loginchroot_cycles(ours, store.service, users[0], n)),
                        (cycles, lambda n: floor_cycles(floor, floor_args, n))]
                if image == "small":
                    progress("making the LVM anchors' volumes")
                    lvm = LvmVolumes(tree, store.base)
                    schroot = Schroot("lcbench-lvm", {"type": "lvm-snapshot", "device": lvm.device("classic"),
                                                      "lvm-snapshot-options": "--size 64M"})
                    thin = Measurement(results, "lvcreate -s", "dm-thin", image,
                                       note="thin LV: lvcreate -s -K, mount; umount, lvremove")
                    anchor = Measurement(results, "schroot", "dm-thin", image, note="lvm-snapshot")
                    runs += [(LAB_ANCHOR_CYCLES, lambda n: lvm.thin_snapshot_cycles(thin, n)),
                             (LAB_ANCHOR_CYCLES, lambda n: schroot.cycles(anchor, n))]
                progress("measuring")
                loginchroot_cycles(Measurement([], "warm-up", "dm-thin", image), store.service, users[0], 3)
                interleaved(*runs)
                if image == "small":
                    # A quarter of the cycles: the lab's 100 held roots take minutes to open.
                    measure_scale(results, store, "dm-thin", image, users, anchor_cycles(cycles))
                    measure_memory(extra, store, "dm-thin", users[0])
            finally:
                if schroot:
                    schroot.remove()
                if lvm:
                    lvm.remove()
                kit.destroy_store(store)
    with open(out_path, "w") as f:
        json.dump({"machine": machine(), "results": results, **extra}, f)


def run_lab(out_path, cycles):
    """measure_lab, in a boot of the VM lab (scripts/vmlab.sh), with what it
    needs made here on the host, where it is fast."""
    lab = tempfile.mkdtemp(prefix="lcbench-lab-", dir="/var/tmp")
    try:
        # On a disk of their own: the guest reads the shared directory
        # through 9p, where copying the large image into a pool took 12 minutes.
        disk = os.path.join(lab, "images.disk")
        with images(LAB_LARGE_PAYLOAD) as trees:
            sizes = {name: tree_size(path) for name, path in trees.items()}
            kit.run(["mkfs.ext4", "-q", "-d", os.path.dirname(trees["small"]), disk, "1G"], timeout=3600)
        kit.run(["bash", os.path.join(ROOT, "scripts/lab-sysdisk.sh"), os.path.join(lab, "system.disk")], timeout=3600)
        for name, flags in (("benchclient", ["-lpam", "-ldl"]), ("rawfloor", ["-DWITH_DEVMAPPER", "-ldevmapper"])):
            shutil.copy(build(name, *flags), os.path.join(lab, name))
        shutil.copy(kit.c_client("pamclient"), os.path.join(lab, "pamclient"))
        settings = {"LC_TIME_SCALE": "10", "LC_BACKENDS": "dm-thin", "LC_BENCH_BIN": lab, "LC_BENCH_IMAGES_DISK": "/dev/vda",
                    "LC_PAMCLIENT": os.path.join(lab, "pamclient"), "LC_MODULE": kit.MODULE, "LC_CLI": kit.CLI,
                    "DM_DISABLE_UDEV": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.path.join(ROOT, "Tests")}
        command = ["env", *(f"{k}={v}" for k, v in settings.items()), sys.executable, os.path.abspath(__file__),
                   "--cycles", str(cycles), "measure", "lab", os.path.join(lab, "lab.json")]
        progress("the VM lab (dm-thin); its output comes at the end")
        booted = subprocess.run(["bash", os.path.join(ROOT, "scripts/vmlab.sh"), "--keep", lab, "--disk", disk,
                                 "--system-disk", os.path.join(lab, "system.disk"), "--", *command],
                                env={**os.environ, "LC_VMLAB_TIMEOUT": "5400", "LC_VMLAB_MEMORY": "8G"})
        if os.path.exists(os.path.join(lab, "lab.json.syslog")):
            shutil.copy(os.path.join(lab, "lab.json.syslog"), out_path + ".syslog")
            print(f"bench: the module's syslog in the VM lab is in {out_path}.syslog", flush=True)
        if booted.returncode != 0:
            sys.exit(f"bench: the VM lab part failed (exit {booted.returncode})")
        with open(os.path.join(lab, "lab.json")) as f:
            part = json.load(f)
        with open(out_path, "w") as f:
            json.dump({**part, "images": sizes}, f)
    finally:
        shutil.rmtree(lab, ignore_errors=True)


def cold_ssh_logins(lab, cycles, user="lcfs1", uid=1000):
    """Alternately with the package's profile enabled and disabled
    (pam-auth-update, as an admin switches it; not timed): from starting
    `ssh lcfs1@127.0.0.1 echo ready` to its first line. Every login is
    cold: the previous one's user manager and root are gone before it
    starts. The first pair warms up."""
    samples = {"loginchroot": [], "without": []}
    command = ["ssh", *lab.options, "-p", str(lab.port), f"{user}@127.0.0.1", "echo ready"]
    for i in range(2 * cycles + 2):
        side = "loginchroot" if i % 2 == 0 else "without"
        systemlab.enable_module(lab, side == "loginchroot")
        deadline = time.monotonic() + 120
        while lab.root(f"systemctl is-active user@{uid}.service; loginchroot sessions",
                       check=False).split() != ["inactive", "no", "open", "session", "roots"]:
            if time.monotonic() > deadline:
                sys.exit("bench: the previous login's user manager or root never ended")
            time.sleep(1)
        start = time.monotonic_ns()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        first = proc.stdout.readline()
        elapsed = time.monotonic_ns() - start
        proc.communicate(timeout=300)
        if i >= 2 and first.strip() == b"ready" and proc.returncode == 0:
            samples[side].append(elapsed)
    return samples


def system_machine(lab, tier):
    package = lab.root("dpkg-query -W -f '${Version}' loginchroot")
    return {"kernel": lab.root("uname -r").strip(), "cpu": "QEMU TCG (full system, systemd as PID 1)",
            "cpus": 2, "memory_gib": 2, "loginchroot": f"{machine()['loginchroot']} (package {package})",
            "openssh": lab.ssh("root", "ssh -V", check=False).stderr.strip(), "emulated": True,
            "tier": tier, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def measure_system(out_path, cycles):
    """A full ssh login on the full-system lab's Debian 12 (systemd, logind,
    the user manager, the package installed, a dm-thin store), with and
    without the module (cold_ssh_logins)."""
    cycles = min(cycles, SYSTEM_CYCLES)
    progress(f"the full-system lab: booting, installing the package, {cycles} cold ssh logins per side")
    lab = systemlab.boot()
    try:
        systemlab.install_package(lab)
        systemlab.make_store(lab)
        samples = cold_ssh_logins(lab, cycles)
        info = system_machine(lab, "system")
    finally:
        lab.stop()
    with open(out_path, "w") as f:
        json.dump({"machine": info, "results": [],
                   "ssh": [{"backend": "dm-thin, full system", **samples, "cycles": cycles}]}, f)


def measure_selinux(out_path, cycles):
    """What SELinux costs a login: the same cold ssh logins, with and without
    the module, on the full-system lab's two disks one after the other: the
    plain one (SELinux off) and the labelled one in enforcing mode (Debian's
    default policy, the package's policy module loaded)."""
    cycles = min(cycles, SELINUX_CYCLES)
    runs, info = [], None
    for selinux in (False, True):
        name = "SELinux enforcing" if selinux else "SELinux off"
        progress(f"the full-system lab, {name}: booting, installing the package, {cycles} cold ssh logins per side")
        lab = systemlab.boot(selinux=selinux)
        try:
            systemlab.install_package(lab)
            systemlab.make_store(lab)
            if selinux:
                lab.root("setenforce 1")
            runs.append({"selinux": name, "mode": lab.root("getenforce 2>/dev/null || echo Disabled").strip(),
                         **cold_ssh_logins(lab, cycles), "cycles": cycles})
            info = info or system_machine(lab, "selinux")
        finally:
            lab.stop()
    with open(out_path, "w") as f:
        json.dump({"machine": info, "results": [], "selinux": runs}, f)


def measure_images_section(cycles, erofs=True):
    """The host part's erofs and fleet comparisons alone (or the fleet's
    alone), their sections of BENCHMARKS.md replaced."""
    os.makedirs(os.path.join(ROOT, ".build/bench"), exist_ok=True)
    with module_syslog(os.path.join(ROOT, ".build/bench/images.syslog")), kit.temporary_users(BENCH_USERS[:1]), \
            images() as trees:
        part = {"machine": machine(), "results": [], "fleet": measure_fleet(trees)}
        if erofs:
            part["erofs"] = measure_erofs(cycles, trees, BENCH_USERS[:1])
    with open(os.path.join(ROOT, ".build/bench/images.json"), "w") as f:
        json.dump(part, f)
    sections = ((report.EROFS_HEADING, report.erofs_table),) if erofs else ()
    for heading, table in sections + ((report.FLEET_HEADING, report.fleet_table),):
        report.write_section(os.path.join(ROOT, "BENCHMARKS.md"), heading, table([part]))


def run_all(cycles, skip_lab):
    out = os.path.join(ROOT, ".build/bench")
    os.makedirs(out, exist_ok=True)
    parts = [os.path.join(out, "host.json")]
    if not skip_lab:  # first: the longer parts, and the ones more likely to fail
        parts.append(os.path.join(out, "lab.json"))
        run_lab(parts[-1], cycles)
        parts.append(os.path.join(out, "system.json"))
        measure_system(parts[-1], cycles)
        parts.append(os.path.join(out, "selinux.json"))
        measure_selinux(parts[-1], cycles)
    measure_host(parts[0], cycles)
    targets = report.write(os.path.join(ROOT, "BENCHMARKS.md"), [json.load(open(p)) for p in parts])
    print("\n".join(["bench: the targets (BENCHMARKS.md says why where one is not met):", *targets]), flush=True)
    progress("wrote BENCHMARKS.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200, help="cycles per measurement (default 200)")
    parser.add_argument("--skip-lab", action="store_true",
                        help="measure on this machine only (no dm-thin, no full system)")
    sub = parser.add_subparsers(dest="command")
    m = sub.add_parser("measure")
    m.add_argument("tier", choices=["host", "lab", "system", "selinux"])
    m.add_argument("out")
    sub.add_parser("selinux-section", help="measure the SELinux part alone and replace its section of BENCHMARKS.md")
    sub.add_parser("images-section", help="measure erofs generations against a directory lower, and fleet "
                                          "delivery, alone, and replace their sections of BENCHMARKS.md")
    sub.add_parser("fleet-section", help="measure fleet delivery alone and replace its section of BENCHMARKS.md")
    r = sub.add_parser("report")
    r.add_argument("out")
    r.add_argument("parts", nargs="+")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (real mounts, users and PAM)")
    if args.command == "measure":
        {"host": measure_host, "lab": measure_lab, "system": measure_system,
         "selinux": measure_selinux}[args.tier](args.out, args.cycles)
    elif args.command == "selinux-section":
        part_path = os.path.join(ROOT, ".build/bench/selinux.json")
        os.makedirs(os.path.dirname(part_path), exist_ok=True)
        measure_selinux(part_path, args.cycles)
        report.write_section(os.path.join(ROOT, "BENCHMARKS.md"), report.SELINUX_HEADING,
                             report.selinux_table([json.load(open(part_path))]))
    elif args.command in ("images-section", "fleet-section"):
        measure_images_section(args.cycles, erofs=args.command == "images-section")
    elif args.command == "report":
        print("\n".join(report.write(args.out, [json.load(open(p)) for p in args.parts])))
    else:
        run_all(args.cycles, args.skip_lab)


if __name__ == "__main__":
    main()
