"""Soak: many open/close cycles in one long-running PAM client process
(pamclient.c, loading the module the way login does). Nothing may grow: the
client's fds and RSS, the host's mounts, cgroups, the store's state files,
and on dm-thin its devices and thin ids. 1000 cycles on the host; the VM
lab emulates its CPU (a dm-thin cycle costs it seconds), so there it runs
LC_SOAK_CYCLES (20 by default).
"""
import json
import os

from lclab.harness import CGROUP2, TIME_SCALE, c_client, record, run, settled_residue

CYCLES = int(os.environ.get("LC_SOAK_CYCLES", "1000" if TIME_SCALE == 1 else "20"))
# Heap arenas and the dynamic loader settle during the first cycles; more
# than this after the first cycle is growth.
RSS_SLACK_KIB = 1024


def footprint(store):
    """What a leak would grow, outside the client."""
    with open("/proc/self/mountinfo") as f:
        mounts = sum(1 for _ in f)
    cgroups = sum(1 for _, names, _ in os.walk(CGROUP2) for name in names if name.startswith("loginchroot-"))
    state_files = sorted(os.path.relpath(os.path.join(d, f), store.state) for d, _, files in os.walk(store.state)
                         for f in files)
    counts = {"mounts": mounts, "cgroups": cgroups, "state files": state_files}
    if store.backend == "dm-thin":
        counts["dm devices"] = len(store.dm_devices())
        counts["thin ids"] = len(store.thin_volumes())
    return counts


def count(value):
    return len(value) if isinstance(value, list) else value


def test_open_and_close_many_times_in_one_process_grows_nothing(store):
    # A first login makes what every later one reuses (the lock files, the
    # pins directory): measure from there.
    run([c_client("pamclient"), store.service, "lctest1", "1", ""])
    before = footprint(store)
    # Each cycle also runs a command inside the root, as a login shell would.
    result = run([c_client("pamclient"), store.service, "lctest1", str(CYCLES), "exit 0"], check=False,
                 timeout=60 * 60)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    problems = settled_residue(store)
    after = footprint(store)
    grown = {name: (before[name], after[name]) for name in before if after[name] != before[name]}
    if stats["failed"]:
        problems.append(f"{stats['failed']} of {CYCLES} cycles failed: {result.stderr[-2000:]}")
    if stats["fds_last"] != stats["fds_first"]:
        problems.append(f"the client's fds went from {stats['fds_first']} to {stats['fds_last']}")
    rss_growth = stats["rss_kib_last"] - stats["rss_kib_first"]
    if rss_growth > RSS_SLACK_KIB:
        problems.append(f"the client's RSS grew by {rss_growth} KiB")
    if grown:
        problems.append(f"grown (before, after): {grown}")
    record("open/close cycles in one PAM client process", store.backend, CYCLES, CYCLES - stats["failed"], [],
           f"client fds {stats['fds_first']} -> {stats['fds_last']}; RSS {stats['rss_kib_first']} -> "
           f"{stats['rss_kib_last']} KiB; " + "; ".join(f"{k} {count(before[k])} -> {count(after[k])}" for k in before), problems)
    assert not problems, "\n".join(problems)
