// The real session host: namespaces, mounts, cgroups and the /proc scan.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public struct LinuxSessionHost: SessionHost {
    let log: (String) -> Void
    /// The cgroup2 mount, looked up once per host.
    let cgroups: Cgroups?

    public init(log: @escaping (String) -> Void) {
        self.log = log
        cgroups = Cgroups.find()
    }

    public func lookupAccount(_ name: UserName) throws -> Account? { try Accounts.lookup(name) }

    public func isRoot() -> Bool { geteuid() == 0 }
    public func bootID() -> String { Kernel.bootID() }

    public func pinnedNamespace(at pin: String) -> UInt64? { Namespaces.pinnedInode(at: pin) }

    public func caller() -> (pid: Int32, startTime: UInt64) {
        let pid = getpid()
        return (pid, Processes.startTime(of: pid) ?? 0)
    }

    public func isAlive(_ member: Member) -> Bool { Processes.isAlive(pid: member.pid, startTime: member.startTime) }
    public func prepareStateDirectory(_ state: StateStore, timeoutSeconds: Int, forPins: Bool) throws {
        try state.prepare(timeoutSeconds: timeoutSeconds, forPins: forPins)
    }
    public func shielded<T>(_ body: () throws -> T) rethrows -> T { try Processes.shielded(body) }

    public func openHostNamespace() throws -> Int32 { try Namespaces.openCurrentMountNamespace().release() }
    public func closeDescriptor(_ fd: Int32) { if fd >= 0 { close(fd) } }

    public func buildRoot(_ plan: SessionPlan, staging: String, pin: String?) throws -> RootIdentity {
        let host = try Namespaces.openCurrentMountNamespace()
        do {
            let session: Descriptor
            if let pin {
                session = try Namespaces.unshareAndPin(at: pin, from: host)
            } else {
                try Namespaces.unshareMountNamespace()
                session = try Namespaces.openCurrentMountNamespace()
            }
            // From here on nothing we mount can propagate back to the host.
            try Mounts.setPropagation("/", MS_SLAVE, recursive: true)
            let labels = plan.isSessionRoot ? SELinux.labelsIfEnabled() : nil
            try RootAssembler(plan: labels == nil ? plan : plan.withHostSELinux(), staging: staging, log: log,
                              labels: labels).assemble()
            let mappedDevice = try writtenFilesDevice(plan, staging: staging)
            try Namespaces.pivotRoot(to: joinPath(staging, plan.rootSubpath))
            guard let rootMount = Mounts.mountID(of: "/") else {
                throw SetupError("the kernel gives no mount ids (statx STATX_MNT_ID)", fix: "run loginchroot on Linux 5.14 or newer")
            }
            var rootInfo = Glibc.stat()
            try sys("stat", "/") { stat("/", &rootInfo) }
            let identity = RootIdentity(namespaceInode: UInt64(try session.stat().st_ino), rootMount: rootMount,
                                        rootDevice: UInt64(rootInfo.st_dev),
                                        filesystemDevice: Mounts.table().first(where: { $0.id == rootMount })?.device ?? 0, mappedDevice: mappedDevice)
            if pin != nil {
                // The caller goes back to the host: the state directory is not
                // visible from inside. joinRoot enters the root.
                try Namespaces.enter(host, what: "host namespace")
            }
            return identity
        } catch {
            do { try Namespaces.enter(host, what: "host namespace") } catch {
                log("could not return to the host namespace after a failed setup: \(error)")
            }
            throw error
        }
    }

    /// The device of the files an overlay root writes (RootIdentity's
    /// mappedDevice): a tmpfs upper's own; 0 for a host directory upper
    /// (shared by every root) and for a root that is no overlay.
    private func writtenFilesDevice(_ plan: SessionPlan, staging: String) throws -> UInt64 {
        for case .overlay(_, let upper, _, _) in plan.rootMounts {
            guard !upper.hasPrefix("/") else { return 0 }
            var info = Glibc.stat()
            let path = joinPath(staging, upper)
            try sys("stat", path) { stat(path, &info) }
            return UInt64(info.st_dev)
        }
        return 0
    }

    /// Mounts `layout` below `staging` in a new private mount namespace of
    /// the calling thread (for `init`, which fills master from host paths)
    /// and returns where the root is. The mounts vanish with the process.
    public func mountPrivately(_ layout: RootLayout, staging: String) throws -> String {
        try Namespaces.unshareMountNamespace()
        try Mounts.setPropagation("/", MS_SLAVE, recursive: true)
        let plan = SessionPlan.master(rootMounts: layout.mounts, rootSubpath: layout.rootSubpath)
        try RootAssembler(plan: plan, staging: staging, log: log, labels: nil).mountRoot()
        return joinPath(staging, layout.rootSubpath)
    }

    public func joinRoot(pin: String) throws {
        let namespace = try Descriptor.open(pin, O_RDONLY)
        try Namespaces.enter(namespace, what: pin)
    }

    public func returnToHost(_ fd: Int32) throws {
        // A CLOEXEC duplicate: the saved fd stays with PAM, and no thread of
        // a multithreaded caller can fork-exec a copy of ours.
        let copy = try sys("fcntl", "F_DUPFD_CLOEXEC") { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
        try Namespaces.enter(Descriptor(adopting: copy), what: "host namespace")
    }

    public func unpin(_ pin: String) throws { try Namespaces.unpin(pin) }

    public func enterHome(_ home: String) {
        if chdir(home) != 0 {
            log("cannot chdir to \(home) inside the root (errno \(errno)); starting in /")
            _ = chdir("/")
        }
    }

    // MARK: cgroups and killing

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
        let deadline = Clock.monotonicSeconds() + Double(timeoutSeconds)
        var pause = 1
        while true {
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
            if !remaining {
                guard let root = identity else { return true }
                if Processes.killHoldingRoot(root, excluding: own) == 0 { return true }
            }
            if Clock.monotonicSeconds() > deadline { return false }
            // Killed processes are gone within a few ms; a stubborn holder
            // (in uninterruptible sleep on a hung NFS home) gets longer waits.
            Processes.sleep(milliseconds: pause)
            pause = min(pause * 2, 50)
        }
    }

    public func userControls(cgroup: String) -> Bool {
        guard let cgroups, !cgroup.isEmpty else { return false }
        return cgroups.outsideDelegation(cgroup) != cgroup
    }

    public func removeCgroup(_ cgroup: String) {
        guard let cgroups, !cgroup.isEmpty, cgroups.exists(cgroup) else { return }
        for _ in 0..<50 {
            if (try? cgroups.remove(cgroup)) != nil { return }
            Processes.sleep(milliseconds: 10)
        }
        log("cgroup \(cgroup) could not be removed")
    }

    public func leftoverCgroups(prefix: String) -> [String] {
        cgroups?.find(prefix: prefix) ?? []
    }

    public func pause(milliseconds: Int) { Processes.sleep(milliseconds: milliseconds) }
}
