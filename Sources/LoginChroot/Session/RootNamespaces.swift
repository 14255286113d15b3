// The namespace side of a session: building a root, moving the login's
// thread between it and the host, and the pins that keep roots alive.
// A protocol, so the session manager is tested without root.
import LoginChrootCore
import LoginChrootPlatform

public protocol RootNamespaces {
    /// This boot's id: recorded namespace inodes and mount ids mean
    /// something only in the boot that recorded them.
    var bootID: String { get }
    /// The inode of the mount namespace pinned at `pin`, or nil when no
    /// namespace is pinned there.
    func pinnedNamespace(at pin: String) -> UInt64?
    /// The calling thread's mount namespace (the host's), for the way back.
    func openHostNamespace() throws -> Descriptor
    /// Builds the root of `plan` in a new namespace pinned in `state`, and
    /// leaves the calling thread inside it (back in `host` when it fails).
    func buildRoot(_ plan: RootPlan, state: StateStore, host: Descriptor) throws -> RootIdentity
    /// Moves the calling thread into the root pinned at `pin`.
    func joinRoot(pin: String) throws
    /// Moves the calling thread back to the host namespace `host`.
    func returnToHost(_ host: Int32) throws
    func unpin(_ pin: String) throws
    /// Changes the calling thread's directory to `home` (or / when it cannot).
    func enterHome(_ home: String)
}

public struct LinuxRootNamespaces: RootNamespaces {
    /// Read when asked (a new root's record, a teardown's trust check).
    public var bootID: String { Kernel.bootID() }
    let lockTimeoutSeconds: Int
    let log: (String) -> Void

    public init(lockTimeoutSeconds: Int, log: @escaping (String) -> Void) {
        self.lockTimeoutSeconds = lockTimeoutSeconds
        self.log = log
    }

    public func pinnedNamespace(at pin: String) -> UInt64? { Namespaces.pinnedInode(at: pin) }
    public func openHostNamespace() throws -> Descriptor { try Namespaces.openCurrentMountNamespace() }

    public func buildRoot(_ plan: RootPlan, state: StateStore, host: Descriptor) throws -> RootIdentity {
        try state.makePinsPrivate(timeoutSeconds: lockTimeoutSeconds)
        return try Roots.build(plan, staging: state.stagingDir, pin: state.pinPath(plan.key), host: host, log: log)
    }

    public func joinRoot(pin: String) throws { try Roots.join(pin: pin) }
    public func returnToHost(_ host: Int32) throws { try Roots.returnToHost(host) }
    public func unpin(_ pin: String) throws { try Namespaces.unpin(pin) }

    public func enterHome(_ home: String) {
        if let code = Roots.enterHome(home) {
            log("cannot chdir to \(home) inside the root (errno \(code)); starting in /")
        }
    }
}

/// A login's passage from the host into its root. It owns what the login
/// holds on the way: the host namespace fd and the caller's cgroup
/// placement. Dropped without `handOver`, it undoes both (the thread goes
/// back to the host, the fd is closed, the caller returns to its own
/// cgroup), so no error path needs a rollback block of its own.
struct RootPassage: ~Copyable {
    private let namespaces: RootNamespaces
    private let reaper: Reaper
    private let host: Descriptor
    let placement: CgroupPlacement
    private var inside = false
    private var keepsCgroup = false
    private let log: (String) -> Void

    init(namespaces: RootNamespaces, reaper: Reaper, placement: CgroupPlacement, log: @escaping (String) -> Void) throws {
        self.namespaces = namespaces
        self.reaper = reaper
        self.placement = placement
        self.log = log
        do { host = try namespaces.openHostNamespace() } catch {
            reaper.returnCaller(placement)  // not yet owned: no deinit runs
            throw error
        }
    }

    /// Builds a new root and moves the thread into it.
    mutating func build(_ plan: RootPlan, state: StateStore) throws -> RootIdentity {
        let identity = try namespaces.buildRoot(plan, state: state, host: host)
        inside = true
        return identity
    }

    /// Moves the thread into an existing root.
    mutating func join(pin: String) throws {
        try namespaces.joinRoot(pin: pin)
        inside = true
    }

    /// Back to the host (before a teardown: the root's mounts stay busy
    /// while the thread is inside).
    mutating func leave() {
        guard inside else { return }
        do {
            try namespaces.returnToHost(host.raw)
            inside = false
        } catch {
            log("could not return to the host namespace: \(error)")
        }
    }

    /// The login stays in its root: the host namespace fd goes to PAM for
    /// close_session. A login keeps its cgroup; the user manager goes back
    /// to its unit's, delegated to the user: there it makes the cgroups of
    /// the user's services, and systemd kills what is left when it stops
    /// the unit.
    consuming func handOver(keepingCgroup: Bool) -> Int32 {
        keepsCgroup = keepingCgroup
        inside = false
        return host.release()
    }

    deinit {
        if inside {
            do { try namespaces.returnToHost(host.raw) } catch { log("could not return to the host namespace: \(error)") }
        }
        if !keepsCgroup { reaper.returnCaller(placement) }
    }
}
