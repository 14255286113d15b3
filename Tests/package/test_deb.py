"""The Debian package (`make deb`), checked as Debian checks packages and
installed as an admin installs it: lintian, and apt in a Debian 12 made by
mmdebstrap, where systemd-analyze verifies the units, pam-auth-update enables the
module, a removal with a root open is refused, and a purge leaves
/etc/pam.d byte-identical to before the install.

The booted systemd machine (logins, the units at boot) is the full-system
lab's; this tier needs no boot.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEB_DIR = os.path.join(ROOT, ".build/deb")
# A cache, never needed: a fresh machine builds the system (2-3 minutes).
SYSTEM_CACHE = os.path.join(ROOT, ".build/package/bookworm-minbase.tar")
SYSTEM_PACKAGES = "systemd,libpam-systemd,btrfs-progs,init-system-helpers"


def run(cmd, check=True, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=900, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def deb():
    debs = sorted(glob.glob(os.path.join(DEB_DIR, "loginchroot_*_amd64.deb")), key=os.path.getmtime)
    assert debs, f"no package in {DEB_DIR}: run 'make deb' first"
    return debs[-1]


@pytest.fixture(scope="module")
def unpacked(deb):
    directory = tempfile.mkdtemp(prefix="lc-deb-")
    run(["dpkg-deb", "-R", deb, directory])
    yield directory
    shutil.rmtree(directory)


def test_lintian_reports_no_error_and_no_warning(deb):
    result = run(["lintian", "--fail-on", "error,warning", "--display-level", ">=warning", deb], check=False)
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert result.returncode == 0 and not tags, f"lintian:\n{result.stdout}\n{result.stderr}"


def test_the_package_holds_what_an_admin_needs(unpacked):
    expected = ["lib/x86_64-linux-gnu/security/pam_loginchroot.so", "usr/sbin/loginchroot",
                "usr/share/man/man8/loginchroot.8.gz", "usr/share/man/man5/loginchroot.conf.5.gz",
                "etc/loginchroot/loginchroot.conf", "usr/share/pam-configs/loginchroot",
                "lib/systemd/system/loginchroot.service", "lib/systemd/system/loginchroot-gc.service",
                "lib/systemd/system/loginchroot-gc.timer", "lib/systemd/system/user@.service.d/loginchroot.conf",
                "lib/systemd/system/loginchroot-pull.service", "lib/systemd/system/loginchroot-pull.timer",
                "usr/share/polkit-1/rules.d/50-loginchroot.rules", "usr/share/doc/loginchroot/copyright",
                "usr/share/selinux/packages/loginchroot.pp", "usr/share/doc/loginchroot/selinux/loginchroot.fc"]
    missing = [path for path in expected if not os.path.isfile(os.path.join(unpacked, path))]
    assert not missing, f"missing from the package: {missing}"
    conffiles = open(os.path.join(unpacked, "DEBIAN/conffiles")).read().split()
    assert "/etc/loginchroot/loginchroot.conf" in conffiles
    profile = open(os.path.join(unpacked, "usr/share/pam-configs/loginchroot")).read()
    assert "Default: no" in profile.splitlines(), "the profile must be off until the admin enables it"
    for binary in ("lib/x86_64-linux-gnu/security/pam_loginchroot.so", "usr/sbin/loginchroot"):
        dynamic = run(["readelf", "-d", os.path.join(unpacked, binary)]).stdout
        assert "RPATH" not in dynamic and "RUNPATH" not in dynamic, f"{binary} has a library search path:\n{dynamic}"
        assert "libswift" not in dynamic, f"{binary} needs the Swift toolchain's libraries:\n{dynamic}"
        # Loaded with dlopen where needed, never at login on a machine without them.
        assert "NEEDED" in dynamic and "libselinux" not in dynamic and "libdevmapper" not in dynamic, \
            f"{binary} links libselinux or libdevmapper:\n{dynamic}"
        sections = run(["readelf", "-S", os.path.join(unpacked, binary)]).stdout
        assert ".symtab" not in sections, f"{binary} is not stripped"
    control = open(os.path.join(unpacked, "DEBIAN/control")).read()
    assert "libpam0g" in control and "libc6" in control, control


# --- installed into a Debian 12 system --------------------------------------

@pytest.fixture(scope="module")
def system():
    """A Debian 12 minbase with systemd and libpam-systemd (so pam_systemd
    is in the PAM stack the module must follow), unpacked from the cache or
    made by mmdebstrap."""
    if not os.path.exists(SYSTEM_CACHE):
        os.makedirs(os.path.dirname(SYSTEM_CACHE), exist_ok=True)
        partial = SYSTEM_CACHE.replace(".tar", ".partial.tar")  # mmdebstrap reads the format off the name
        run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={SYSTEM_PACKAGES}", "bookworm", partial])
        os.rename(partial, SYSTEM_CACHE)
    directory = tempfile.mkdtemp(prefix="lc-system-")
    with tarfile.open(SYSTEM_CACHE) as tar:
        tar.extractall(directory, numeric_owner=True)
    mounts = []
    try:
        for source, target, kind in (("proc", "proc", "proc"), ("/dev", "dev", None)):
            path = os.path.join(directory, target)
            run(["mount", "--rbind", source, path] if kind is None else ["mount", "-t", kind, source, path])
            mounts.append(path)
        yield directory
    finally:
        for path in reversed(mounts):
            run(["umount", "-R", path], check=False)
        with open("/proc/self/mountinfo") as f:  # what a failed test left
            left = [line.split()[4] for line in f if line.split()[4].startswith(directory + "/")]
        for path in sorted(left, key=len, reverse=True):
            run(["umount", "-l", path], check=False)
        shutil.rmtree(directory)


def in_system(system, command, check=True):
    return run(["chroot", system, "sh", "-c", command], check=check,
               env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"})


def pam_files(system):
    directory = os.path.join(system, "etc/pam.d")
    return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(directory))}


def a_root_record(system):
    """What an open root leaves in the state directory (the format
    `loginchroot sessions` reads)."""
    roots = os.path.join(system, "run/loginchroot/roots")
    os.makedirs(roots, mode=0o700, exist_ok=True)
    with open(os.path.join(roots, "alice"), "w") as f:
        f.write("version=1\nkey=alice\nuser=alice\nuid=1000\nbackend=btrfs\ngeneration=gen-1\nphase=active\n"
                "member=4242.1.0 4242 1 - -\n")
    return os.path.join(roots, "alice")


def test_installed_enabled_removed_and_purged_as_an_admin_does(system, deb):
    before = pam_files(system)
    shutil.copy(deb, os.path.join(system, "tmp/loginchroot.deb"))
    in_system(system, "apt-get install -y -q /tmp/loginchroot.deb")
    assert pam_files(system) == before, "installing must change nothing in /etc/pam.d (Default: no)"
    assert in_system(system, "systemctl is-enabled loginchroot.service").stdout.strip() == "enabled"
    assert in_system(system, "systemctl is-enabled loginchroot-gc.timer").stdout.strip() == "enabled"
    # Only a fleet's login machines pull: the admin enables it there.
    assert in_system(system, "systemctl is-enabled loginchroot-pull.timer || true").stdout.strip() == "disabled"
    units = " ".join(f"/lib/systemd/system/{name}"
                     for name in ("loginchroot.service", "loginchroot-gc.service", "loginchroot-gc.timer",
                                  "loginchroot-pull.service", "loginchroot-pull.timer"))
    verified = run(["systemd-analyze", "verify", "--man=no", f"--root={system}", *units.split()], check=False)
    assert verified.returncode == 0 and not verified.stderr.strip(), f"systemd-analyze verify:\n{verified.stderr}"

    in_system(system, "pam-auth-update --enable loginchroot")
    session = open(os.path.join(system, "etc/pam.d/common-session")).read().splitlines()
    modules = [line.split()[2] for line in session if line.startswith("session")]
    assert "pam_loginchroot.so" in modules, session
    assert modules.index("pam_loginchroot.so") > modules.index("pam_systemd.so"), \
        f"the module must come after pam_systemd: {modules}"
    noninteractive = open(os.path.join(system, "etc/pam.d/common-session-noninteractive")).read()
    assert "requisite\tpam_loginchroot.so" in noninteractive, \
        f"the user manager, cron and sudo include common-session-noninteractive:\n{noninteractive}"
    line = next(line for line in session if "pam_loginchroot.so" in line)
    assert line.split()[1] == "requisite", f"a refused session must stop the stack there (no motd): {line}"

    record = a_root_record(system)
    refused = in_system(system, "apt-get remove -y -q loginchroot", check=False)
    assert refused.returncode != 0, "removal with a root open must be refused"
    assert "session roots are open" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert in_system(system, "dpkg-query -W -f='${Status}' loginchroot").stdout == "install ok installed"
    assert "pam_loginchroot.so" in open(os.path.join(system, "etc/pam.d/common-session")).read(), \
        "a refused removal keeps the module enabled"

    os.unlink(record)  # the control: with no root open, the removal goes through
    in_system(system, "apt-get remove -y -q loginchroot")
    assert "pam_loginchroot" not in open(os.path.join(system, "etc/pam.d/common-session")).read()
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if "/run/loginchroot" in line.split()[4]
                   and line.split()[4].startswith(system)]
    assert not mounted, f"still mounted after the removal: {mounted}"
    in_system(system, "apt-get purge -y -q loginchroot")
    assert pam_files(system) == before, "/etc/pam.d must be byte-identical to before the install"
    for gone in ("etc/loginchroot", "run/loginchroot", "lib/systemd/system/loginchroot.service",
                 "etc/systemd/system/multi-user.target.wants/loginchroot.service",
                 "etc/systemd/system/timers.target.wants/loginchroot-gc.timer", "usr/share/pam-configs/loginchroot"):
        assert not os.path.lexists(os.path.join(system, gone)), f"{gone} left after purge"


def test_every_package_a_fix_hint_names_is_in_debian_12():
    """Each `apt install PKG` in a message the product prints, and each
    package RequiredPrograms names, is a package Debian 12's archive has
    (apt-cache knows a candidate for it). The control: a made-up name has none."""
    import re
    sources = ""
    for directory, _, names in os.walk(os.path.join(ROOT, "Sources")):
        sources += "".join(open(os.path.join(directory, name)).read() for name in names if name.endswith(".swift"))
    named = set()
    for words in re.findall(r"apt install ((?:-t \S+ )?[a-z0-9][a-z0-9.+ -]*)", sources):
        named.update(word for word in words.split() if not word.startswith("-") and word != "bookworm-backports")
    named.update(re.findall(r'in: "([a-z0-9.+-]+)"', sources))
    assert {"debootstrap", "btrfs-progs", "psmisc", "rsyslog"} <= named, named
    def candidate(package):
        policy = run(["apt-cache", "policy", package], check=False).stdout
        return "Candidate:" in policy and "Candidate: (none)" not in policy
    missing = sorted(package for package in named if not candidate(package))
    assert not missing, f"fix hints name packages Debian 12 does not have: {missing}"
    assert not candidate("loginchroot-no-such-package"), "apt-cache policy found a made-up package (the control)"
