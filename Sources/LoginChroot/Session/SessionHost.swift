// Everything a session does to the machine, behind one protocol, so the
// session manager's logic can be tested with a fake host and a fake backend.
import LoginChrootCore
import LoginChrootPlatform  // RootIdentity

public struct CgroupPlacement: Equatable {
    public var cgroup: String
    public var parent: String
    public init(cgroup: String, parent: String) { self.cgroup = cgroup; self.parent = parent }
}

public protocol SessionHost {
    func lookupAccount(_ name: UserName) throws -> Account?
    func isRoot() -> Bool
    /// This boot's id (Kernel.bootID).
    func bootID() -> String
    /// The inode of the mount namespace pinned at `pin`, or nil when no
    /// namespace is pinned there.
    func pinnedNamespace(at pin: String) -> UInt64?
    func caller() -> (pid: Int32, startTime: UInt64)
    func isAlive(_ member: Member) -> Bool
    /// Creates the state directory and makes its pins/ a private mount
    /// (StateStore.prepare); behind the host so tests need neither root nor mounts.
    func prepareStateDirectory(_ state: StateStore, timeoutSeconds: Int, forPins: Bool) throws
    /// Runs `body` where the user who started the login cannot signal the
    /// calling process (Processes.shielded).
    func shielded<T>(_ body: () throws -> T) rethrows -> T

    /// An fd of the caller thread's current mount namespace, for the way back.
    func openHostNamespace() throws -> Int32
    func closeDescriptor(_ fd: Int32)
    /// Builds the root in a new namespace. With a `pin`, the namespace is
    /// pinned there and the calling thread returns to the host (joinRoot
    /// enters it); without one, the calling thread stays inside.
    func buildRoot(_ plan: SessionPlan, staging: String, pin: String?) throws -> RootIdentity
    /// Moves the calling thread into the pinned root.
    func joinRoot(pin: String) throws
    /// Changes the calling thread's directory to `home` (or / when it cannot).
    func enterHome(_ home: String)
    /// Moves the calling thread back to the namespace `fd`.
    func returnToHost(_ fd: Int32) throws
    func unpin(_ pin: String) throws

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
    func pause(milliseconds: Int)
}
