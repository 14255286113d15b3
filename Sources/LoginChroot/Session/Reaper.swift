// The process side of a session: the cgroups its processes are kept in,
// the kill at logout, and every wait for something to let go, under one
// deadline policy (Deadline.poll). A protocol, so the session manager is
// tested without root.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public struct CgroupPlacement: Equatable {
    public var cgroup: String
    public var parent: String
    public init(cgroup: String, parent: String) { self.cgroup = cgroup; self.parent = parent }
}

public protocol Reaper {
    /// The calling process and its start time (0 when /proc does not say).
    func caller() -> (pid: Int32, startTime: UInt64)
    func isAlive(_ member: Member) -> Bool
    /// Runs `body` where the user who started the login cannot signal the
    /// calling process (Processes.shielded).
    func shielded<T>(_ body: () throws -> T) rethrows -> T

    /// Moves the caller into a new cgroup below its own (next to it when its
    /// own is a loginchroot- cgroup; above it when a user controls it);
    /// throws when cgroup2 is unusable here. The placement's parent is the
    /// caller's own cgroup, where close returns it.
    func placeCaller(inCgroupNamed name: String) throws -> CgroupPlacement
    /// False when the caller could not be moved (it is then still in its
    /// session cgroup, and killAll spares it).
    func moveCaller(toCgroup parent: String) -> Bool
    /// Kills every process in `cgroups` and every process still using the
    /// root, never the caller itself; true when none is left before the timeout.
    func killAll(cgroups: [String], identity: RootIdentity?, timeoutSeconds: Int) -> Bool
    func removeCgroup(_ cgroup: String)
    /// Whether `cgroup` sits in a subtree delegated to a user, who could
    /// freeze a process there.
    func userControls(cgroup: String) -> Bool
    /// Cgroups whose names start with `prefix` (this instance's), anywhere.
    func leftoverCgroups(prefix: String) -> [String]
    /// Runs `release` until it stops failing or about 2 s have passed, and
    /// throws its last error then: a root's mounts are released as the last
    /// process in its namespace goes, and a removal right after a kill may
    /// still find them busy for a moment.
    func retryWhileBusy(_ release: () throws -> Void) throws
}

extension Reaper {
    /// The caller back in its own cgroup, and the session's cgroup removed.
    func returnCaller(_ placement: CgroupPlacement) {
        _ = moveCaller(toCgroup: placement.parent)  // it logs a failure
        removeCgroup(placement.cgroup)
    }
}

public final class CgroupReaper: Reaper {
    /// The cgroup2 mount, looked up once, when first needed (an exempt
    /// user's login never needs it).
    lazy var cgroups: Cgroups? = Cgroups.find()
    let log: (String) -> Void

    public init(log: @escaping (String) -> Void) { self.log = log }

    public func caller() -> (pid: Int32, startTime: UInt64) {
        let pid = getpid()
        return (pid, Processes.startTime(of: pid) ?? 0)
    }

    public func isAlive(_ member: Member) -> Bool { Processes.isAlive(pid: member.pid, startTime: member.startTime) }
    public func shielded<T>(_ body: () throws -> T) rethrows -> T { try Processes.shielded(body) }

    public func placeCaller(inCgroupNamed name: String) throws -> CgroupPlacement {
        guard let cgroups, var parent = cgroups.current() else {
            throw SetupError("no usable cgroup v2: a session's processes could not all be found at logout",
                             fix: "mount cgroup2 (Debian 12 with systemd has it at /sys/fs/cgroup)")
        }
        // A process that opens a second session sits in its first one's
        // cgroup: make the new one a sibling, so killing one spares the other.
        if let slash = parent.lastIndex(of: "/"), parent[parent.index(after: slash)...].hasPrefix("loginchroot-") {
            parent = parentDirectory(of: parent)
        }
        guard !parent.unicodeScalars.contains(where: { $0 == " " || $0 == "\n" || $0 == "\t" }) else {
            throw SetupError("the login process's cgroup \(parent) has a blank in its name, which the state record cannot hold",
                             fix: "run the login service from a unit and slice whose names have no blanks")
        }
        // Never below a cgroup a user controls (su from a terminal under
        // their systemd --user): they could freeze the login while it holds
        // what other users wait for, and move the session's processes out.
        let child = joinPath(cgroups.outsideDelegation(parent), name)
        do {
            try cgroups.create(child)
            try cgroups.move(pid: getpid(), to: child)
            return CgroupPlacement(cgroup: child, parent: parent)
        } catch {
            try? cgroups.remove(child)
            throw error
        }
    }

    public func moveCaller(toCgroup parent: String) -> Bool {
        guard let cgroups, !parent.isEmpty else { return true }
        do { try cgroups.move(pid: getpid(), to: parent) } catch {
            log("cannot move back to cgroup \(parent): \(error)")
            return false
        }
        return true
    }

    /// The root's cgroups are its index: its processes cannot leave them
    /// (they are root's, and not delegated), and cgroup.kill takes each
    /// whole, forks in flight included, at a cost that grows with the root,
    /// not with the machine. Once they are empty, one pass over /proc finds
    /// what holds the root from outside them (Processes.holdsRoot).
    public func killAll(cgroups names: [String], identity: RootIdentity?, timeoutSeconds: Int) -> Bool {
        let own = getpid()
        let ownCgroup = cgroups?.current()
        return Deadline(seconds: Double(timeoutSeconds)).poll {
            var remaining = false
            for name in names {
                guard let cgroups, cgroups.exists(name) else { continue }
                if name == ownCgroup {
                    // The caller could not leave: cgroup.kill would take it too.
                    if cgroups.killEach(in: name, excluding: own) > 0 { remaining = true }
                } else if cgroups.isPopulated(name) {
                    remaining = true
                    // No cgroup.kill before Linux 5.14: one by one then.
                    if !cgroups.kill(name) { _ = cgroups.killEach(in: name, excluding: own) }
                }
            }
            guard !remaining else { return false }
            guard let identity else { return true }
            return Processes.killHoldingRoot(identity, excluding: own) == 0
        }
    }

    public func userControls(cgroup: String) -> Bool {
        guard let cgroups, !cgroup.isEmpty else { return false }
        return cgroups.outsideDelegation(cgroup) != cgroup
    }

    public func removeCgroup(_ cgroup: String) {
        guard let cgroups, !cgroup.isEmpty, cgroups.exists(cgroup) else { return }
        // A cgroup is busy until the kernel has reaped its last process.
        if !Deadline(seconds: 0.5).poll({ (try? cgroups.remove(cgroup)) != nil }) {
            log("cgroup \(cgroup) could not be removed")
        }
    }

    public func leftoverCgroups(prefix: String) -> [String] {
        cgroups?.find(prefix: prefix) ?? []
    }

    public func retryWhileBusy(_ release: () throws -> Void) throws {
        var last: Error?
        if Deadline(seconds: 2).poll({
            do { try release() } catch { last = error; return false }
            return true
        }) { return }
        if let last { throw last }
    }
}
