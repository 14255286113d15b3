"""The admin verbs that the client tests do not already drive: init from a
tarball, update, gc of generations, check naming problems, stop, and module
arguments."""
import json
import os
import shlex
import shutil
import tarfile
import tempfile

from lclab.harness import CLI, HeldSession, Store, assert_no_residue, destroy_store, needs_backend, run, write_config


@needs_backend("overlay")
def test_init_from_a_tarball_and_update_publishes(image_dir):
    base = tempfile.mkdtemp(prefix="lc-tar-", dir="/var/lib")
    os.chmod(base, 0o755)
    store = Store("overlay", base)
    try:
        tarball = os.path.join(base, "image.tar")
        with tarfile.open(tarball, "w") as tar:
            tar.add(image_dir, arcname=".")
        write_config(store, "")
        with open(store.config, "a") as f:
            f.write("[master]\nupdate_command = echo updated > /etc/update-stamp\n")
        assert "published gen-1" in store.cli("init", "--from-tar", tarball).stdout
        assert os.path.exists(f"{store.path}/stable/gen-1/etc/loginchroot-image")
        assert "published gen-2" in store.cli("update").stdout
        assert open(f"{store.path}/stable/gen-2/etc/update-stamp").read() == "updated\n"
        assert not os.path.exists(f"{store.path}/stable/gen-1/etc/update-stamp"), "generations are immutable"
        # A failing update publishes nothing.
        write_config(store, "")
        with open(store.config, "a") as f:
            f.write("[master]\nupdate_command = false\n")
        failed = store.cli("update", check=False)
        assert failed.returncode != 0 and "nothing published" in failed.stderr
        assert json.loads(store.cli("status", "--json").stdout)["current"] == "gen-2"
    finally:
        destroy_store(store)


def test_gc_collects_generations_nobody_uses(store):
    def generations():
        return [g["name"] for g in json.loads(store.cli("status", "--json").stdout)["generations"]]
    old = generations()
    for _ in range(3):
        store.cli("publish")
    published = generations()[len(old):]
    assert len(published) == 3, (old, published)
    # A root on the newest, never closed: gc reclaims it too. keep_generations
    # = 2 keeps the newest two.
    run(["pamtester", store.service, "lctest1", "open_session"])
    gc = store.cli("gc").stdout
    for name in old + published[:1]:
        assert f"generation {name}: removed" in gc, gc
    assert generations() == published[1:]
    assert_no_residue(store)


def test_check_names_each_problem_and_its_fix(store):
    assert store.cli("check").returncode == 0
    with store.unpublished():
        result = store.cli("check", check=False)
        assert result.returncode == 1
        assert "FAIL  current generation" in result.stdout and "fix: run 'loginchroot publish'" in result.stdout
    with open(store.config, "a") as f:
        f.write("[session]\nmode = sometimes\n")
    result = store.cli("check", check=False)
    assert result.returncode == 1
    assert f"{store.config}:" in result.stdout and "unknown mode 'sometimes'" in result.stdout
    assert "fix: use per-user or per-session" in result.stdout


def test_unknown_and_hostile_module_arguments_are_ignored(store):
    """After a valid config= they change nothing; the module neither crashes
    nor takes a relative or empty config path. (Oversized ones cannot be
    tested here: libpam cuts a line of /etc/pam.d at 1 KiB before the module
    sees it; the unit tests cover the module's own limit.)"""
    hostile = ["bogus_argument", "config", "config=", "config=relative/loginchroot.conf", "%n%n%s%x", "debug=1"]
    with open(f"/etc/pam.d/{store.service}", "wb") as f:
        f.write(b"auth required pam_permit.so\naccount required pam_permit.so\n"
                + store.pam_lines(" " + " ".join(hostile)).splitlines()[0].encode() + b" \xff\xfe\n"
                + b"session optional pam_permit.so\n")
    run(["pamtester", store.service, "lctest1", "open_session", "close_session"])
    assert_no_residue(store)


def test_commands_refuse_non_root(store):
    result = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", CLI, "status", "--config", store.config],
                 check=False)
    assert result.returncode != 0 and "needs root" in result.stderr


def mounted_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if (line.split()[4] + "/").startswith(path.rstrip("/") + "/")]


def test_stop_refuses_while_a_root_is_open_then_leaves_nothing_mounted(store):
    """What the package's prerm runs before a removal: with a root open it
    refuses (status 75) and changes nothing; once it is closed the store and
    the state directory's pins go offline, logins are refused, and start
    brings all back."""
    held = HeldSession(store, "lctest1")
    try:
        held.wait_until_in(store)
        refused = store.cli("stop", check=False)
        assert refused.returncode == 75 and "session roots are open: lctest1" in refused.stderr, refused
        assert run(["pamtester", store.service, "lctest2", "open_session", "close_session"], check=False).returncode == 0, \
            "a refused stop leaves the store online (the control)"
    finally:
        status, output = held.finish()
    assert status == 0, output
    stopped = store.cli("stop")
    online_before_stop = store.backend in ("btrfs", "overlay-erofs")  # a store image, erofs generations
    assert ("unmounted" in stopped.stdout) == online_before_stop, stopped.stdout
    assert mounted_under(store.path) == [], mounted_under(store.path)
    assert mounted_under(store.state) == [], mounted_under(store.state)
    if online_before_stop:
        refused = run(["pamtester", store.service, "lctest1", "open_session", "close_session"], check=False)
        assert refused.returncode != 0, "a login with the store offline must be refused"
    store.cli("start")
    run(["pamtester", store.service, "lctest1", "open_session", "close_session"])
    assert_no_residue(store)


def test_config_is_a_global_option_and_its_fix_hints_harm_nothing(store):
    """--config works before the verb as after it; a config file in a
    directory others can write (/tmp) is refused with a fix that moves the
    file, never one that changes /tmp."""
    before = run([CLI, "--config", store.config, "status", "--json"])
    assert json.loads(before.stdout)["current"], before.stdout
    with tempfile.NamedTemporaryFile("w", dir="/tmp", suffix=".conf") as shared:
        shared.write(open(store.config).read())
        shared.flush()
        refused = run([CLI, "check", "--config", shared.name], check=False)
    assert refused.returncode == 1
    assert f"fix: move {shared.name} into a directory that only root can write" in refused.stdout, refused.stdout
    assert "chmod" not in refused.stdout, refused.stdout
    assert oct(os.stat("/tmp").st_mode & 0o7777) == "0o1777"


@needs_backend("btrfs")
def test_init_shows_a_tools_output_only_when_it_fails_and_a_rerun_finishes_the_job(image_dir):
    """init on a new btrfs store image: mkfs.btrfs's own notes stay out of
    a run that works. A truncated tarball fails with tar's own words in
    the error and an emptied master, after progress on the admin's
    terminal; the same init with a whole tarball (the control) then makes
    the store, and in a log says only that."""
    base = tempfile.mkdtemp(prefix="lc-init-", dir="/var/lib")
    os.chmod(base, 0o755)
    store = Store("btrfs", base)
    try:
        write_config(store)
        whole = os.path.join(base, "image.tar")
        with tarfile.open(whole, "w") as tar:
            tar.add(image_dir, arcname=".")
        cut = os.path.join(base, "cut.tar")
        with open(whole, "rb") as source, open(cut, "wb") as target:
            target.write(source.read(os.path.getsize(whole) // 2))
        # On a terminal (script(1) gives it one), as an admin runs it.
        command = shlex.join([CLI, "init", "--from-tar", cut, "--config", store.config])
        failed = run(["script", "-qec", command, "/dev/null"], check=False)
        said = failed.stdout.replace("\r", "\n")
        assert failed.returncode == 1, said
        assert f"extracting {cut} into master: " in said and " written, 0:" in said, f"no progress shown:\n{said}"
        assert "tar failed with exit status 2" in said and "Unexpected EOF" in said, said
        assert "master was emptied: run the same 'loginchroot init' again" in said, said
        assert "NOTE" not in said, "mkfs.btrfs's notes were shown although it worked"
        made = store.cli("init", "--from-tar", whole)
        assert made.stdout == "store ready at %s (btrfs); published gen-1\n" % store.path, made.stdout
        assert made.stderr == "", made.stderr
        assert os.path.exists(f"{store.path}/stable/gen-1/etc/loginchroot-image")
    finally:
        destroy_store(store)


@needs_backend("btrfs")
def test_init_checks_the_programs_it_needs_before_it_makes_anything(image_dir):
    """init --debootstrap where debootstrap is not installed: it names the
    package and makes nothing (no store image, no master). The control: the
    same init finds mkfs.btrfs, which this machine has."""
    base = tempfile.mkdtemp(prefix="lc-tools-", dir="/var/lib")
    os.chmod(base, 0o755)
    store = Store("btrfs", base)
    try:
        write_config(store)
        bin_dir = os.path.join(base, "bin")  # a PATH with everything but debootstrap
        os.mkdir(bin_dir)
        for program in ("mkfs.btrfs", "tar", "cp", "mount"):
            found = shutil.which(program)
            assert found, f"{program} is needed for the control"
            os.symlink(found, os.path.join(bin_dir, program))
        result = run([CLI, "init", "--debootstrap", "bookworm", "--config", store.config], check=False,
                     env={"PATH": bin_dir})
        assert result.returncode == 1, result
        assert "debootstrap not found" in result.stderr and "fix: apt install debootstrap" in result.stderr, result.stderr
        assert not os.path.exists(f"{base}/store.img"), "init made the store image before finding its tools missing"
        without_mkfs = run([CLI, "check", "--config", store.config], check=False, env={"PATH": "/nonexistent"})
        assert "FAIL  programs init needs: mkfs.btrfs not found" in without_mkfs.stdout, without_mkfs.stdout
        assert "fix: apt install btrfs-progs" in without_mkfs.stdout
    finally:
        destroy_store(store)
