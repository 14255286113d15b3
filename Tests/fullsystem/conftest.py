"""The full-system tier: one boot of the full-system lab (systemlab.py)
serves the whole tier.
"""
import contextlib
import json
import os
import time

import pytest

import systemlab

ROOT = systemlab.ROOT
RELIABILITY_LOG = os.environ.get("LC_RELIABILITY_LOG", os.path.join(ROOT, ".build/reliability/system.jsonl"))
USERS = ("lcfs1", "lcfs2")  # made by the image script; password "lcfs"
PASSWORD = "lcfs"
MARKER = "/run/loginchroot-session"  # in every root (RootMarker.path)


def record(case, tries, held, measured="", problems=()):
    """One row of RELIABILITY.md (scripts/reliability-report.py)."""
    os.makedirs(os.path.dirname(RELIABILITY_LOG), exist_ok=True)
    with open(RELIABILITY_LOG, "a") as f:
        f.write(json.dumps({"case": case, "backend": "dm-thin", "tries": tries, "held": held, "lost": [],
                            "measured": measured, "problems": list(problems)[:5], "tier": "system",
                            "when": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


@pytest.fixture(scope="session")
def machine():
    with contextlib.suppress(FileNotFoundError):
        os.unlink(RELIABILITY_LOG)  # this run's rows only
    machine = systemlab.boot()
    print(f"\nfull-system lab: booted to a login prompt and ssh in {machine.boot_seconds:.0f} s")
    yield machine
    machine.stop()
