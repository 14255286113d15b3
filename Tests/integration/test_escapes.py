"""Escapes: a non-root user inside a session tries to write to the image,
master and the host outside the binds, to see or touch another user's root,
and to leave something behind after logout. Every attempt must fail, and
afterwards the image, master and the host must be as they were.

(The README's "Security model" says what holds and why; root inside a
session is not contained, see there.)
"""
import os

from lclab.harness import (CGROUP2, Canaries, HeldSession, assert_no_residue, c_client, record, run, token)


def attempts(store, t, other_pid):
    """Shell commands that each must fail for a non-root user in a root."""
    return [
        "echo x > /etc/passwd",                                   # the root's own system files
        f"echo x > /bin/lc-escape-{t}",
        f"ls {store.path}",                                        # the store: master, generations, snapshots
        f"ls {store.state}",                                       # the state and the namespace pins
        "ls /proc/1/root/",                                        # the host root, through init
        f"echo x > /proc/1/root/lc-escape-{t}",
        f"ls /proc/{other_pid}/root/srv/scratch/",                 # another user's root
        f"cat /proc/{other_pid}/root/srv/scratch/secret-{t}",
        f"echo x > /proc/{other_pid}/root/srv/scratch/lc-escape-{t}",
        f"nsenter -t {other_pid} -m true",
        "nsenter -t 1 -m true",
        "mount -t tmpfs none /srv/scratch",
        f"echo $$ > {CGROUP2}/cgroup.procs",                       # out of the session's cgroup
        f"unshare -Urm sh -c 'mount --bind / /mnt && echo x > /mnt/lc-escape-{t}'",
        "echo x > /proc/sys/kernel/hostname",
    ]


def test_a_non_root_user_cannot_escape_the_root(store, users):
    t = token()
    canaries = Canaries(users["lctest1"].pw_dir)
    other = HeldSession(store, "lctest2", before=f"echo secret > /srv/scratch/secret-{t}; echo $$ > /tmp/lc-other-{t}")
    try:
        other.wait_until_in(store)
        for _ in range(300):
            if os.path.exists(f"/tmp/lc-other-{t}") and open(f"/tmp/lc-other-{t}").read().strip():
                break
            run(["sleep", "0.1"])
        other_pid = int(open(f"/tmp/lc-other-{t}").read())
        tries = attempts(store, t, other_pid)
        script = "\n".join(f"if sh -c {quote(attempt)} >/dev/null 2>&1; then echo ESCAPED: {quote(attempt)}; "
                           f"else echo held; fi" for attempt in tries)
        # A control that must succeed, so a broken harness cannot pass.
        script += f"\nif sh -c 'echo x > /tmp/lc-control-{t}'; then echo control-ok; fi"
        # And something that tries to outlive the logout: out of its cgroup,
        # into its own session, user and mount namespace.
        script += (f"\n(echo $$ > {CGROUP2}/cgroup.procs; exec setsid unshare -Urm sleep 3021) "
                   f">/dev/null 2>&1 </dev/null &\necho left > /srv/scratch/survivor-{t}\n")
        result = run([c_client("pamclient"), store.service, "lctest1", "1", script], check=False)
        escaped = [line for line in result.stdout.splitlines() if line.startswith("ESCAPED")]
        held = result.stdout.splitlines().count("held")
        other_status, other_output = other.finish()
    finally:
        for path in (f"/tmp/lc-other-{t}", f"/tmp/lc-control-{t}"):
            if os.path.exists(path):
                os.unlink(path)
    problems = escaped + ([] if result.returncode == 0 else [f"the session failed: {result.stderr}"])
    if "control-ok" not in result.stdout:
        problems.append(f"the control write to /tmp failed, so the attempts prove nothing: {result.stdout}")
    if held != len(tries):
        problems.append(f"{held} of {len(tries)} attempts reported held: {result.stdout}")
    if other_status != 0:
        problems.append(f"the other user's session was disturbed: {other_output}")
    if os.path.exists(f"/lc-escape-{t}"):
        problems.append("a write reached the host root")
    # A new login finds nothing of the last one, and the image has none of it.
    again = run([c_client("pamclient"), store.service, "lctest1", "1",
                 f"! ls /srv/scratch/survivor-{t} 2>/dev/null"], check=False)
    if again.returncode != 0:
        problems.append("a file in the root survived the logout")
    with store.image_trees() as trees:
        for tree in trees:
            for name in (f"bin/lc-escape-{t}", f"srv/scratch/survivor-{t}", f"srv/scratch/lc-escape-{t}"):
                if os.path.exists(os.path.join(tree, name)):
                    problems.append(f"{name} reached {tree}")
    lost = canaries.lost()
    canaries.remove()
    record("a non-root user tries to leave the root, reach another user's root, or outlive the logout",
           store.backend, len(tries) + 1, held + (0 if any("surviv" in p for p in problems) else 1), lost,
           "attempts: " + "; ".join(a.replace(t, "T").replace(str(other_pid), "PID").replace(store.base, "BASE")
                                    for a in tries), problems)
    assert not problems and not lost, "\n".join(problems + lost)
    assert_no_residue(store)  # the survivor process included


def quote(text):
    return "'" + text.replace("'", "'\\''") + "'"
