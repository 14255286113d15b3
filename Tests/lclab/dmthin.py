"""The dm-thin lab's store (scripts/lab-test.sh): its pool on the VM lab's two
disks, kept across the lab's two boots (test_dmthin_lab.py, then
test_dmthin_reboot.py)."""
import os

from lclab.harness import TIME_SCALE, Store, run

LAB_DIR = os.environ.get("LC_LAB_DIR", "")
VOLUME_MB = 128


def lab_store():
    store = Store("dm-thin", os.path.join(LAB_DIR, "store-base"))
    store.state = "/run/lclab-state"  # tmpfs: gone after a reboot, as on a real machine
    return store


def write_lab_config(store, extra=""):
    os.makedirs(os.path.dirname(store.config), exist_ok=True)
    with open(store.config, "w") as f:
        f.write(f"""[store]
backend = dm-thin
path = {store.path}
keep_generations = 1
min_free = 10%

[dm-thin]
pool_name = {store.pool}
data_device = /dev/vda
metadata_device = /dev/vdb
volume_size = {VOLUME_MB}M

[session]
state_dir = {store.state}
lock_timeout = {15 * TIME_SCALE}
{extra}
""")
    os.chmod(store.config, 0o644)
    for service in (store.service, "runuser-l"):  # the guest's /etc is its own
        with open(f"/etc/pam.d/{service}", "w") as f:
            f.write("auth sufficient pam_rootok.so\naccount required pam_permit.so\n" + store.pam_lines())


def thin_id_exists(store, thin_id):
    """Activating a thin id the pool does not have fails in the kernel."""
    name = f"{store.pool}-probe"
    result = run(["dmsetup", "create", name, "--table", f"0 2048 thin /dev/mapper/{store.pool}-pool {thin_id}"], check=False)
    if result.returncode == 0:
        run(["dmsetup", "remove", name])
    return result.returncode == 0


def assert_pool_agrees(store):
    """The store's record and the pool agree: the transaction id, and every
    recorded volume is in the pool."""
    recorded, actual = store.metadata()["transaction"], store.pool_status()["transaction"]
    assert recorded == actual, (recorded, actual)
    for role, (thin_id, state) in store.metadata()["volumes"].items():
        assert state == "live", (role, state)
        assert thin_id_exists(store, thin_id), f"{role} (thin id {thin_id}) is missing from the pool"
