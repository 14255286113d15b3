"""dm-thin in a real kernel: the VM lab's second boot. The first boot
(test_dmthin_lab.py) lost its power in the middle of a publish, with two
session roots open; the pool is not assembled and /run is empty, as after
any reboot."""
import json
import os

import pytest

from lclab.harness import assert_no_residue, record, run
from lclab.dmthin import LAB_DIR, assert_pool_agrees, lab_store, thin_id_exists, write_lab_config
from lclab.harness import in_root, pamtester

pytestmark = pytest.mark.skipif(
    not (LAB_DIR and os.path.exists(os.path.join(LAB_DIR, "before-reboot.json"))
         and os.path.exists("/dev/mapper/control")),
    reason="the second boot of the VM lab (make lab-test, part of make test)")


def test_start_after_a_power_cut_mid_publish_with_open_sessions_leaves_a_consistent_pool():
    store = lab_store()
    write_lab_config(store)
    before = json.load(open(os.path.join(LAB_DIR, "before-reboot.json")))
    try:
        assert run(["dmsetup", "info", f"{store.pool}-pool"], check=False).returncode != 0, "pool active before start"
        # The publish had recorded its intent: a new generation's volume, creating.
        interrupted = [(role, thin_id) for role, (thin_id, state) in store.metadata()["volumes"].items()
                       if state == "creating"]
        assert len(interrupted) == 1 and interrupted[0][0].startswith("gen-"), store.metadata()
        role, thin_id = interrupted[0]
        out = store.cli("start").stdout
        assert "online" in out, out
        after = store.metadata()
        assert not [role for role in after["volumes"] if role.startswith("session:")], after
        assert "session:lctest1" in before["volumes"] and "session:lctest2" in before["volumes"]
        # The two session volumes were deleted through the protocol: two transactions.
        assert after["transaction"] == before["transaction"] + 2, (before, after)
        assert_pool_agrees(store)
        assert [d for d in store.dm_devices() if "-session-" in d] == []
        # The interrupted publish is undone in the pool too, and published anew.
        assert role not in after["volumes"], after
        assert not thin_id_exists(store, thin_id)

        # Logins work again, on the generation published before the reboot.
        pamtester(store, "lctest1", "open_session")
        out = in_root(store, "lctest1", "lctest1", "cat /etc/image-version; cat /srv/scratch/left 2>/dev/null || echo fresh").stdout
        assert out.split() == ["v2", "fresh"], out
        store.cli("end", "lctest1")
        assert_no_residue(store)
        assert_pool_agrees(store)
        store.cli("publish")
        pamtester(store, "lctest1", "open_session")
        assert in_root(store, "lctest1", "lctest1", "cat /etc/image-version").stdout.split() == ["v3"]
        store.cli("end", "lctest1")
        assert_no_residue(store)
        assert_pool_agrees(store)
        record("power cut in the VM lab in the middle of a publish, with two sessions open", "dm-thin", 1, 1, [],
               "after the reboot: start settled the pool (the half-made generation's thin id deleted, the two "
               "session volumes removed), the store's record and the pool agree, logins work, master's change "
               "was published anew")
    finally:
        store.cli("gc", check=False)
        for name in sorted(store.dm_devices(), key=lambda n: n.endswith("-pool")):
            run(["dmsetup", "remove", "--retry", name], check=False)
