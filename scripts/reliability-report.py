#!/usr/bin/env python3
"""Writes RELIABILITY.md from the rows the tests of one `make test` run
recorded in .build/reliability/ (unit, host, lab, system, selinux .jsonl): one row
per case, with what was tried, how often, what held and what was lost."""
import glob
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIERS = {"unit": "unit tests (no root)", "host": f"this machine ({platform.release()})",
         "lab": "VM lab (Debian's kernel under qemu)",
         "system": "full-system lab (Debian 12 booted with systemd under qemu, the package installed)",
         "selinux": "the full-system lab's labelled variant booted with SELinux, permissive then enforcing"}


def rows():
    for tier in TIERS:
        # TIER.jsonl, and TIER-VARIANT.jsonl from a second run of the tier (host-erofs).
        for path in [os.path.join(ROOT, ".build/reliability", f"{tier}.jsonl")] + \
                sorted(glob.glob(os.path.join(ROOT, ".build/reliability", f"{tier}-*.jsonl"))):
            if os.path.exists(path):
                with open(path) as f:
                    yield from (json.loads(line) for line in f if line.strip())


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def main():
    found = list(rows())
    if not found:
        sys.exit("reliability-report: no rows in .build/reliability/ (run `make test` first)")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    tiers = sorted({row["tier"] for row in found}, key=list(TIERS).index)
    failed = [row for row in found if row["held"] != row["tries"] or row["lost"]]
    lines = [
        "# RELIABILITY",
        "",
        f"Written by `make test` (scripts/reliability-report.py) on {time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"commit {commit}, from the rows its tests recorded. Every number below comes from that run.",
        "",
        "Tiers in this run: " + "; ".join(f"**{t}**: {TIERS[t]}" for t in tiers) + ".",
        "",
        f"**{len(found)} cases, {sum(r['tries'] for r in found)} tries; "
        + (f"{len(failed)} cases did not hold.**" if failed else "all held, nothing lost.**"),
        "",
        "| case | backend | tier | tries | held | lost | what was measured |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for row in found:
        lost = ", ".join(row["lost"]) if row["lost"] else "nothing"
        measured = row["measured"] + "".join(f"; DID NOT HOLD: {p}" for p in row.get("problems", []))
        lines.append(f"| {cell(row['case'])} | {row['backend']} | {row['tier']} | {row['tries']} | {row['held']} "
                     f"| {cell(lost)} | {cell(measured)} |")
    lines += [
        "",
        "- *tries*: how many times the case was run (for crash cases: one kill per named step).",
        "- *held*: how many of them ended as they must (the next login works, gc leaves no residue,"
        " the other sessions are undisturbed).",
        "- *lost*: host files or mounts that changed, and store data that went missing.",
        "",
    ]
    with open(os.path.join(ROOT, "RELIABILITY.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"RELIABILITY.md: {len(found)} cases, {len(failed)} did not hold")


if __name__ == "__main__":
    main()
