"""`make bench`'s parts, kept working: its two C programs on real stores,
and the report's verdicts. No timing is asserted anywhere."""
import json
import os

import pytest

import bench
import report
from lclab.harness import run, token


def mounts():
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


def test_benchclient_cycles_open_and_close_through_pam(store):
    out = json.loads(run([bench.build("benchclient", "-lpam", "-ldl"), "cycles", store.service, "lctest1", "3"]).stdout)
    assert out["failed"] == 0
    assert len(out["open_ns"]) == len(out["close_ns"]) == 3 and min(out["open_ns"]) > 0


def test_benchclient_load_and_memory(store):
    client = bench.build("benchclient", "-lpam", "-ldl")
    load = json.loads(run([client, "load", bench.kit.MODULE]).stdout)
    assert load["load_ns"] > 0 and load["rss_kib_after"] > load["rss_kib_before"]
    memory = json.loads(run([client, "memory", store.service, "lctest1"]).stdout)
    assert memory["failed"] == 0 and memory["rss_kib_open"] > memory["rss_kib_before"] > 0


def test_raw_floor_leaves_nothing_behind(store):
    if store.backend == "dm-thin":
        pytest.skip("the dm-thin floor runs in make bench's VM lab part only")
    work = os.path.join(store.path if store.backend == "btrfs" else "/var/lib", f"lcbench-test-{token()}")
    os.mkdir(work)
    before = mounts()
    try:
        out = json.loads(run([bench.build("rawfloor"), store.backend, bench.current_generation_path(store), work,
                              "3"]).stdout)
        assert len(out["begin_ns"]) == len(out["end_ns"]) == 3
        assert os.listdir(work) == [], "the floor left snapshots or directories"
        assert mounts() == before
    finally:
        run(["rm", "-rf", work])


def part(ours_ms, schroot_ms, floor_ms, held_ms, rss_kib, load_ms, crowd_ms):
    def row(tool, total_ms, held=0, crowd=0):
        half = int(total_ms * 1e6 / 2)
        return {"tool": tool, "backend": "btrfs", "image": "small", "open_sessions": held, "note": "",
                "other_processes": crowd, "begin_ns": [half] * 5, "end_ns": [half] * 5, "failed": 0}
    return {"machine": {"emulated": False, "when": "now"}, "images": {"small": {"files": 1, "mib": 1}},
            "results": [row("loginchroot", ours_ms), row("schroot", schroot_ms), row("raw floor", floor_ms),
                        row("loginchroot", ours_ms, 1), row("loginchroot", held_ms, 100),
                        row("loginchroot", crowd_ms, 1, report.CROWD)],
            "memory": [{"backend": "btrfs", "rss_kib_before": 1000, "rss_kib_open": 1000 + rss_kib,
                        "rss_kib_after": 1000 + rss_kib, "failed": 0}],
            "load": {"loginchroot": [{"load_ns": int(load_ms * 1e6), "rss_kib_before": 1, "rss_kib_after": 2}],
                     "pam_permit": [{"load_ns": 100000, "rss_kib_before": 1, "rss_kib_after": 1}]}}


def verdicts(tmp_path, *args):
    path = tmp_path / "B.md"
    report.write(str(path), [part(*args)])
    text = path.read_text()
    return {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").rsplit(" | ", 1)[1]
            for line in text.splitlines() if line.endswith(("| met |", "| **not met** |"))}, text


def test_report_marks_each_target_met_or_not(tmp_path):
    met, text = verdicts(tmp_path, 10, 200, 6, 14, 4000, 2, 11)
    assert set(met.values()) == {"met"}, met
    assert "Why targets were missed" not in text
    missed, text = verdicts(tmp_path, 10, 90, 4, 16, 9000, 4, 14)
    assert {k.split(",")[0] for k, v in missed.items() if v == "**not met**"} == {
        "schroot btrfs-snapshot", "raw floor", "100 open sessions against 1",
        "logout with 1000 processes of another session running against without",
        "RSS the module adds to the login process", "module load (dlopen): at most 3 ms"}, missed
    assert "Why targets were missed" in text
