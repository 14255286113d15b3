"""BENCHMARKS.md from the parts bench.py measured (the host's, the VM lab's).

Every ratio divides medians taken in the same part of the same run. A cycle's
total is its begin plus its end (open_session plus close_session for
loginchroot; session begin plus end for schroot; create plus remove for the
floor and LVM).
"""
import os
import statistics

# (what, how to check it): the targets.
SCHROOT_FACTOR = 10
LVM_FACTOR = 10
FLOOR_FACTOR = 2
SCALE_FACTOR = 1.5
CROWD = 1000  # processes of another session running, for the logout's target
CROWD_FACTOR = 1.2
RSS_LIMIT_KIB = 8 * 1024
LOAD_LIMIT_MS = 3

# Why a target can be missed: what each cost is (found with strace -c and
# -T on the benchmark's client, and a btrfs snapshot loop with and without
# writes into each snapshot).
WHY = {
    "floor": "The floor only makes the snapshot and mounts it, then unmounts and removes it. loginchroot's "
             "open also takes the state lock and writes the root's record, makes a mount namespace and pins it, "
             "binds the host paths (/proc, /sys, /dev, /dev/pts, /dev/shm, /tmp, /var/tmp, /home, /run/user/UID) "
             "through fds resolved inside the image, writes the account entries, resolv.conf, hosts and its "
             "marker into the root, and moves the caller into a new cgroup; its close moves the caller out, "
             "kills the cgroup, makes one pass over /proc for what holds the root from outside it, unmounts, "
             "removes the snapshot and drops the record. Those steps are the session's guarantees; the floor has none, and "
             "on overlay, whose floor is two mounts, they are nearly all of the time. Two of them cost more "
             "than their syscalls suggest: each move of the caller into or out of a cgroup (a write to "
             "cgroup.procs) makes the kernel wait for every CPU (an RCU grace period; under strace these took "
             "milliseconds, more while the machine was busy), and on btrfs the files written into a root make the commit of "
             "the next snapshot heavier (the floor never writes into its snapshot), the more so the larger the "
             "image.",
    "scale": "The logout kills the root's cgroups (their size, not the machine's, sets that cost) and then "
             "makes one pass over /proc for processes that hold the root from outside them: each held session "
             "adds a process of root's (its PAM client, as sshd's monitor would be), which costs about nine "
             "calls (its executable, its status for the real uid, its namespace, root and working directory), "
             "and two of its user's, one call each. Each login and logout also moves the client into and out "
             "of a cgroup, a write to cgroup.procs that waits for an RCU grace period, and that wait grows "
             "with what the machine runs. On btrfs each login also reads the mount table, which gains a line "
             "per open root.",
    "crowd": "Each of the other session's processes costs the logout's pass over /proc one stat of /proc/PID "
             "(about 2.3 us here, measured with a C loop over 1000 processes: 2.5 ms, plus 0.6 ms to list "
             "/proc), and the logout without them takes only a few ms, so 1000 of them cost more than the "
             "target's 20 %. The pass itself is what finds a process of the user's outside the root that "
             "holds a file of it (class 8); nothing in the kernel lists a user's processes more cheaply.",
    "schroot-btrfs": "loginchroot's own cycle is slower on this image (see the floor's reason: the commit of each "
                     "btrfs snapshot carries the previous root's writes, and it grows with the image).",
    "schroot": "loginchroot's own cycle was slower than usual on this backend in this run: see the latency "
               "table and the raw samples.",
    "lvm": "This ratio is measured in the VM lab only, where the CPU is emulated for both sides, and what "
           "dominates each side under emulation need not on real hardware; this machine's own kernel has no "
           "device-mapper, so the ratio on real hardware is not measured.",
    "rss": "The module's static Swift runtime and its pages touched during a session count towards the login "
           "process's RSS.",
    "load": "dlopen maps and relocates the module with its static Swift runtime.",
}


def ms(ns):
    return f"{ns / 1e6:.1f}" if ns >= 1e6 else f"{ns / 1e6:.2f}"


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def totals(row):
    return [b + e for b, e in zip(row["begin_ns"], row["end_ns"])]


def median_total(row):
    return statistics.median(totals(row)) if row and row["begin_ns"] else None


def find(rows, tool, backend, image="small", open_sessions=0, other_processes=0):
    return next((r for r in rows if r["tool"] == tool and r["backend"] == backend and r["image"] == image
                 and r["open_sessions"] == open_sessions and r.get("other_processes", 0) == other_processes
                 and r["begin_ns"]), None)


def median_end(row):
    return statistics.median(row["end_ns"])


class Targets:
    def __init__(self):
        self.lines, self.missed = [], {}  # why -> the targets it explains

    def add(self, target, measured, met, why):
        self.lines.append(f"| {target} | {measured} | {'met' if met else '**not met**'} |")
        if not met:
            self.missed.setdefault(why, []).append(target)

    def whys(self):
        return [f"- {why} (Missed: {'; '.join(targets)}.)" for why, targets in self.missed.items()]


def write(path, parts):
    rows = [dict(row, tier="lab" if part["machine"]["emulated"] else "host") for part in parts for row in part["results"]]
    out = ["# Benchmarks", "",
           "Written by `make bench` (`bench/bench.py`, `bench/report.py`); the Machine table gives when each "
           "part ran (`bench.py report` can join parts measured apart). Each comparison's cycles ran in "
           "interleaved rounds within one part, and every ratio divides medians from the same part. Absolute times belong "
           "to this machine; the VM lab emulates its CPU (no KVM), so its times are many times the host's and "
           "only its ratios mean anything. Nothing here is a test: `make test` never depends on a timing.", ""]
    out += machine_table(parts)
    targets = Targets()
    check_anchors(targets, rows)
    check_floor(targets, rows)
    check_scale(targets, rows)
    check_memory(targets, parts)
    out += ["## Targets", "", "| target | measured | |", "|---|---|---|", *targets.lines, ""]
    if targets.missed:
        out += ["### Why targets were missed", "", *targets.whys(), ""]
    out += latency_table(rows)
    out += scale_table(rows)
    out += ssh_table(parts)
    out += selinux_table(parts)
    out += erofs_table(parts)
    out += fleet_table(parts)
    out += memory_table(parts)
    out += raw_samples(rows, parts)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return targets.lines


def part_name(part):
    if part["machine"].get("tier") == "system":
        return "full system (dm-thin, systemd)"
    if part["machine"].get("tier") == "selinux":
        return "full system, SELinux off and enforcing"
    return "VM lab (dm-thin)" if part["machine"]["emulated"] else "host (btrfs, overlay)"


def machine_table(parts):
    keys = [("when", "run"), ("kernel", "kernel"), ("cpu", "CPU"), ("cpus", "CPUs"), ("memory_gib", "memory (GiB)"),
            ("emulated", "CPU emulated"), ("loginchroot", "loginchroot (git)"), ("schroot", "schroot"),
            ("lvm", "LVM"), ("openssh", "OpenSSH")]
    names = [part_name(p) for p in parts]
    lines = ["## Machine", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(parts)]
    for key, label in keys:
        lines.append(f"| {label} | " + " | ".join(str(p["machine"].get(key, "")) for p in parts) + " |")
    for p, name in zip(parts, names):
        sizes = ", ".join(f"{image} {s['mib']} MiB in {s['files']} files" for image, s in p.get("images", {}).items())
        if sizes:
            lines.append(f"\nImages on the {name}: {sizes}.")
    return lines + [""]


def ratio_line(targets, rows, backend, anchor_tool, factor, label, why):
    for image in ("small", "large"):
        ours, anchor = find(rows, "loginchroot", backend, image), find(rows, anchor_tool, backend, image)
        if not ours or not anchor:
            continue
        ratio = median_total(anchor) / median_total(ours)
        targets.add(f"{label}, {image} image: at least {factor}x faster",
                    f"{ratio:.1f}x ({ms(median_total(anchor))} ms against {ms(median_total(ours))} ms)",
                    ratio >= factor, why)


def check_anchors(targets, rows):
    for backend, kind in (("btrfs", "btrfs-snapshot"), ("overlay", "overlay")):
        ratio_line(targets, rows, backend, "schroot", SCHROOT_FACTOR, f"schroot {kind}, {backend}, begin+end",
                   WHY["schroot-btrfs" if backend == "btrfs" else "schroot"])
    ratio_line(targets, rows, "dm-thin", "lvcreate -s", LVM_FACTOR, "lvcreate -s / lvremove, dm-thin (VM lab)",
               WHY["lvm"])


def check_floor(targets, rows):
    for backend in ("btrfs", "overlay", "dm-thin"):
        for image in ("small", "large"):
            ours, floor = find(rows, "loginchroot", backend, image), find(rows, "raw floor", backend, image)
            if not ours or not floor:
                continue
            ratio = median_total(ours) / median_total(floor)
            targets.add(f"raw floor, {backend}, {image} image: within {FLOOR_FACTOR}x",
                        f"{ratio:.1f}x ({ms(median_total(ours))} ms against {ms(median_total(floor))} ms)",
                        ratio <= FLOOR_FACTOR, WHY["floor"])


def check_scale(targets, rows):
    for backend in ("btrfs", "overlay", "dm-thin"):
        for image in ("small", "large"):
            one, hundred = find(rows, "loginchroot", backend, image, 1), find(rows, "loginchroot", backend, image, 100)
            if not one or not hundred:
                continue
            ratio = median_total(hundred) / median_total(one)
            targets.add(f"100 open sessions against 1, {backend}, {image} image: within {SCALE_FACTOR}x",
                        f"{ratio:.2f}x ({ms(median_total(hundred))} ms against {ms(median_total(one))} ms)",
                        ratio <= SCALE_FACTOR, WHY["scale"])
            crowd = find(rows, "loginchroot", backend, image, 1, CROWD)
            if crowd:
                ratio = median_end(crowd) / median_end(one)
                targets.add(f"logout with {CROWD} processes of another session running against without, {backend}, "
                            f"{image} image: within {CROWD_FACTOR}x",
                            f"{ratio:.2f}x ({ms(median_end(crowd))} ms against {ms(median_end(one))} ms)",
                            ratio <= CROWD_FACTOR, WHY["crowd"])


def check_memory(targets, parts):
    for part in parts:
        for m in part.get("memory", []):
            added = m["rss_kib_open"] - m["rss_kib_before"]
            targets.add(f"RSS the module adds to the login process, {m['backend']}: at most 8 MB",
                        f"{added / 1024:.1f} MiB", added <= RSS_LIMIT_KIB, WHY["rss"])
        if "load" in part:
            load = statistics.median(s["load_ns"] for s in part["load"]["loginchroot"]) / 1e6
            permit = statistics.median(s["load_ns"] for s in part["load"]["pam_permit"]) / 1e6
            targets.add(f"module load (dlopen): at most {LOAD_LIMIT_MS} ms",
                        f"{load:.2f} ms (pam_permit.so: {permit:.2f} ms)", load <= LOAD_LIMIT_MS, WHY["load"])


def latency_table(rows):
    lines = ["## Login and logout latency", "",
             "Begin is `pam_open_session` for loginchroot (through libpam, in one process shaped like login: "
             "`bench/benchclient.c`), `schroot --begin-session`, or the snapshot and mount; end is "
             "`pam_close_session`, `schroot --end-session`, or the unmount and remove. In ms; the last column is "
             "the median total divided by loginchroot's on the same backend and image.", "",
             "| tool | backend | image | cycles | begin p50 / p95 / p99 | end p50 / p95 / p99 | total p50 | vs loginchroot |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["open_sessions"] or not row["begin_ns"]:
            continue
        ours = median_total(find(rows, "loginchroot", row["backend"], row["image"]))
        tool = row["tool"] + (f" ({row['note']})" if row["note"] else "")
        cycles = str(len(row["begin_ns"])) + (f" ({row['failed']} failed)" if row["failed"] else "")
        b, e = row["begin_ns"], row["end_ns"]
        versus = f"{median_total(row) / ours:.2f}x" if ours else "-"
        lines.append(f"| {tool} | {row['backend']} | {row['image']} | {cycles} | "
                     f"{' / '.join(ms(percentile(b, p)) for p in (50, 95, 99))} | "
                     f"{' / '.join(ms(percentile(e, p)) for p in (50, 95, 99))} | {ms(median_total(row))} | {versus} |")
    return lines + [""]


def scale_table(rows):
    lines = ["## Scale: sessions of other users held open", "",
             "Each held session is a real login (a PAM client with a shell waiting in its root). Median total "
             "open+close in ms, and its ratio to the figure with 1 held.", "",
             f"The last two columns hold 1 session open whose shell started {CROWD} processes, and compare the "
             "logout alone (close_session) with the one with 1 held.", "",
             f"| backend | image | cycles | 1 | 10 | 100 | 100 vs 1 | logout, 1 / 1 with {CROWD} processes | logout vs 1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for backend in ("btrfs", "overlay", "dm-thin"):
        for image in ("small", "large"):
            points = [find(rows, "loginchroot", backend, image, n) for n in (1, 10, 100)]
            if not all(points):
                continue
            medians = [median_total(p) for p in points]
            crowd = find(rows, "loginchroot", backend, image, 1, CROWD)
            logout = (f"{ms(median_end(points[0]))} / {ms(median_end(crowd))} | "
                      f"{median_end(crowd) / median_end(points[0]):.2f}x") if crowd else "- | -"
            lines.append(f"| {backend} | {image} | {len(points[0]['begin_ns'])} | "
                         + " | ".join(ms(m) for m in medians) + f" | {medians[2] / medians[0]:.2f}x | {logout} |")
    return lines + [""]


def ssh_table(parts):
    runs = [s for p in parts for s in p.get("ssh", [])]
    if not runs:
        return []
    lines = ["## A full ssh login", "",
             "From starting `ssh user@127.0.0.1 echo ready` (key login, loopback) to its first line of output, "
             "through the real sshd, with loginchroot in sshd's session stack and, alternately, without it. In ms. "
             "On the full system (Debian 12 booted with systemd as PID 1 under emulation, reached through qemu's "
             "port forward) the module is in the stack as the package puts it there (pam-auth-update), each login "
             "is cold (it starts the user's manager, which then joins the root), and the ratio is what the "
             "module adds to a whole login there.",
             "", "| backend | logins each | with p50 / p95 / p99 | without p50 / p95 / p99 | with vs without |",
             "|---|---|---|---|---|"]
    for run in runs:
        if not run["loginchroot"] or not run["without"]:
            lines.append(f"| {run['backend']} | no successful logins | | | |")
            continue
        w, wo = run["loginchroot"], run["without"]
        lines.append(f"| {run['backend']} | {len(w)} | {' / '.join(ms(percentile(w, p)) for p in (50, 95, 99))} | "
                     f"{' / '.join(ms(percentile(wo, p)) for p in (50, 95, 99))} | "
                     f"{statistics.median(w) / statistics.median(wo):.2f}x |")
    return lines + [""]


SELINUX_HEADING = "## What SELinux costs a login"


def selinux_table(parts):
    runs = [(p["machine"], s) for p in parts for s in p.get("selinux", [])]
    if not runs:
        return []
    lines = [SELINUX_HEADING, "",
             "The same cold ssh logins as above, on the full-system lab's two disks booted one after the other in "
             f"one part (run {runs[0][0]['when']}): the plain one (SELinux off; the module never loads "
             "libselinux there) and the labelled one (Debian's default policy and the package's policy module, "
             "`setenforce 1`). In ms.", "",
             "| machine | mode | logins each | with p50 / p95 | without p50 / p95 | with vs without |",
             "|---|---|---|---|---|---|"]
    medians = {}
    for _, run in runs:
        w, wo = run["loginchroot"], run["without"]
        if not w or not wo:
            lines.append(f"| {run['selinux']} | {run['mode'] or 'Disabled'} | no successful logins | | | |")
            continue
        medians[run["selinux"]] = (statistics.median(w), statistics.median(wo))
        lines.append(f"| {run['selinux']} | {run['mode'] or 'Disabled'} | {len(w)} | "
                     f"{' / '.join(ms(percentile(w, p)) for p in (50, 95))} | "
                     f"{' / '.join(ms(percentile(wo, p)) for p in (50, 95))} | {medians[run['selinux']][0] / medians[run['selinux']][1]:.2f}x |")
    if len(medians) == 2:
        (on_with, on_without), (off_with, off_without) = medians["SELinux enforcing"], medians["SELinux off"]
        lines += ["", f"SELinux enforcing against off: {on_with / off_with:.2f}x with the module, "
                      f"{on_without / off_without:.2f}x without it (two boots of two disks: a ratio across them "
                      "includes what else differs between the disks, Debian's SELinux packages)."]
    return lines + [""]


def write_section(path, heading, section):
    """Replaces (or adds before "Memory and load") the section under
    `heading` of an existing BENCHMARKS.md with the lines `section`, leaving
    the other sections as their run wrote them."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    section = "\n".join(section)
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        marker = text.find("\n## Memory and load")
        text = text[:marker + 1] + section + "\n" + text[marker + 1:] if marker >= 0 else text + "\n" + section
    with open(path, "w") as f:
        f.write(text)


EROFS_HEADING = "## Erofs generations against a directory lower"


def erofs_table(parts):
    rows = [(p["machine"], r) for p in parts for r in p.get("erofs", [])]
    if not rows:
        return []
    lines = [EROFS_HEADING, "",
             "The overlay backend with `[overlay] lower = erofs` against its directory lower, the same image in "
             f"both stores, on the host (run {rows[0][0]['when']}, kernel {rows[0][0]['kernel']}): `loginchroot "
             "publish` (alternating between the stores; mkfs.erofs -zlz4hc against cp -a --reflink=auto of master, "
             "here on the host's ext4, where there is no reflink), the disk one generation takes (`du -B1`), and "
             "login+logout cycles (interleaved). Times in ms, p50 / p95. An erofs publish is mostly mkfs.erofs "
             "compressing with lz4hc on one CPU; a directory publish is cp writing every byte of master again. "
             "Logins differ by nothing but the lower layer's filesystem.", "",
             "| image | publish, directory | publish, erofs | erofs vs directory | generation on disk, directory | "
             "erofs | erofs vs directory | login+logout, directory | erofs | erofs vs directory |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, row in rows:
        cells = [row["image"]]
        for kind in ("publish_ns", "generation_bytes", "login_ns"):
            directory, erofs = row[kind]["directory"], row[kind]["erofs"]
            if kind == "generation_bytes":
                cells += [f"{directory / 2**20:.1f} MiB", f"{erofs / 2**20:.1f} MiB", f"{erofs / directory:.2f}x"]
            else:
                cells += [" / ".join(ms(percentile(v, p)) for p in (50, 95)) for v in (directory, erofs)]
                cells.append(f"{statistics.median(erofs) / statistics.median(directory):.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


FLEET_HEADING = "## Fleet delivery over OSTree"


def fleet_table(parts):
    rows = [(p["machine"], r) for p in parts for r in p.get("fleet", [])]
    if not rows:
        return []
    machine, row = rows[0]
    publish, export = statistics.median(row["publish_ns"]), statistics.median(row["export_ns"])
    lines = [FLEET_HEADING, "",
             f"On the host (run {machine['when']}), the large image: the build host's `publish --export` against a "
             f"plain `publish` of the same master ({len(row['publish_ns'])} of each, alternating; the first export "
             "commits every object, the later ones only what changed, and each makes a static delta and signs), "
             "then a login store's `update --pull` from a web server on 127.0.0.1 in a network namespace: the "
             "first pull (every object) and the next one, after a commit that changed one file (its static delta), "
             "on a login store with directory generations and on one with erofs generations. A pull's time includes "
             "the checkout and the publish; an export's, the publish.", "",
             "| | measured | against |", "|---|---|---|",
             f"| publish --export, p50 (ms) | {ms(export)} | publish {ms(publish)}: {export / publish:.2f}x |",
             f"| first export (ms) | {ms(row['export_ns'][0])} | |"]
    for lower in ("directory", "erofs"):
        first, delta = row[f"pull_first_{lower}_ns"], row[f"pull_delta_{lower}_ns"]
        sent_first, sent_delta = row[f"pull_first_{lower}_bytes"], row[f"pull_delta_{lower}_bytes"]
        lines += [f"| update --pull, first, {lower} lower (ms) | {ms(first)} | |",
                  f"| update --pull, next commit, {lower} lower (ms) | {ms(delta)} | first pull: {delta / first:.2f}x |",
                  f"| bytes sent, next commit, {lower} lower | {sent_delta} | first pull {sent_first}: "
                  f"1/{sent_first // max(1, sent_delta)} |"]
    lines += ["", "A pull checks its commit out straight into the next generation: hardlinked to the repository's "
              "objects for a directory lower (so the next commit's pull writes little beyond its delta), and for "
              "erofs generations a hardlinked tree that mkfs.erofs builds the whole image from (so its next pull "
              "costs about a publish of the image).", ""]
    return lines


def memory_table(parts):
    lines = ["## Memory and load", "",
             "VmRSS of the benchmark's login-shaped client before its first `pam_start`, with a session open, "
             "and after it closed; and the time for a fresh process to `dlopen` the module (median of 50 "
             "processes), with pam_permit.so, a C module, for comparison.", "",
             "| backend | RSS before (KiB) | with a session open | after | added |", "|---|---|---|---|---|"]
    for part in parts:
        for m in part.get("memory", []):
            lines.append(f"| {m['backend']} | {m['rss_kib_before']} | {m['rss_kib_open']} | {m['rss_kib_after']} | "
                         f"{m['rss_kib_open'] - m['rss_kib_before']} |")
    for part in parts:
        if "load" in part:
            lines.append("")
            for name, samples in part["load"].items():
                loads = [s["load_ns"] for s in samples]
                rss = statistics.median(s["rss_kib_after"] - s["rss_kib_before"] for s in samples)
                lines.append(f"- dlopen of {name}: p50 {ms(statistics.median(loads))} ms, p95 "
                             f"{ms(percentile(loads, 95))} ms; RSS added by the load alone {rss:.0f} KiB.")
    return lines + [""]


def raw_samples(rows, parts):
    """Every sample of the run, in ms, in the order taken."""
    lines = ["## Raw samples", "", "Every cycle of the run, in ms, in the order taken (begin+end for each cycle).", ""]
    for row in rows:
        if not row["begin_ns"]:
            continue
        label = f"{row['tool']}, {row['backend']}, {row['image']} image, {row['open_sessions']} held open"
        lines += [f"<details><summary>{label}</summary>", "", "begin: " + ", ".join(ms(v) for v in row["begin_ns"]),
                  "", "end: " + ", ".join(ms(v) for v in row["end_ns"]), "", "</details>", ""]
    for part in parts:
        for run in part.get("ssh", []):
            lines += [f"<details><summary>ssh login, {run['backend']}</summary>", ""]
            lines += [f"{side}: " + ", ".join(ms(v) for v in run[side]) + "\n" for side in ("loginchroot", "without")]
            lines += ["</details>", ""]
        if "load" in part:
            lines += ["<details><summary>dlopen</summary>", ""]
            lines += [f"{name}: " + ", ".join(ms(s["load_ns"]) for s in samples) + "\n"
                      for name, samples in part["load"].items()]
            lines += ["</details>", ""]
    return lines
