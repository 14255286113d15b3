// Making a root and moving a thread between it and the host: the namespace
// half of a login (RootAssembler does what happens inside).
import Glibc
import LoginChrootCore

public enum Roots {
    /// Builds the root `plan` describes in a new mount namespace of the
    /// calling thread, below `staging`, and leaves the thread inside it.
    /// With a `pin`, the namespace is pinned there by a bind made from the
    /// host namespace `host`, so it outlives its processes. On failure the
    /// thread is back in `host`.
    public static func build(_ plan: RootPlan, staging: String, pin: String?, host: Descriptor,
                             log: @escaping (String) -> Void) throws -> RootIdentity {
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
            return RootIdentity(namespaceInode: UInt64(try session.stat().st_ino), rootMount: rootMount,
                                rootDevice: UInt64(rootInfo.st_dev),
                                filesystemDevice: Mounts.table().first(where: { $0.id == rootMount })?.device ?? 0,
                                mappedDevice: mappedDevice)
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
    private static func writtenFilesDevice(_ plan: RootPlan, staging: String) throws -> UInt64 {
        for case .overlay(_, let upper, _, _) in plan.rootMounts {
            guard !upper.hasPrefix("/") else { return 0 }
            var info = Glibc.stat()
            let path = joinPath(staging, upper)
            try sys("stat", path) { stat(path, &info) }
            return UInt64(info.st_dev)
        }
        return 0
    }

    /// Mounts an image's `mounts` below `staging` in a new private mount
    /// namespace of the calling thread (init fills master from host paths,
    /// the labels are checked in a generation) and returns where its root
    /// is. The mounts vanish with the process.
    public static func mountPrivately(_ mounts: [MountSpec], rootSubpath: String, staging: String,
                                      log: @escaping (String) -> Void) throws -> String {
        try Namespaces.unshareMountNamespace()
        try Mounts.setPropagation("/", MS_SLAVE, recursive: true)
        let plan = RootPlan.master(rootMounts: mounts, rootSubpath: rootSubpath)
        try RootAssembler(plan: plan, staging: staging, log: log, labels: nil).mountRoot()
        return joinPath(staging, rootSubpath)
    }

    /// Runs `body`, which may move the calling thread into a mount namespace
    /// of its own (mountPrivately, build without a pin), and brings the
    /// thread back to the namespace it was in afterwards, failed or not.
    public static func returningToThisNamespace<T>(_ body: () throws -> T) throws -> T {
        let home = try Namespaces.openCurrentMountNamespace()
        let result: T
        do { result = try body() } catch {
            try? Namespaces.enter(home, what: "the caller's namespace")  // body's error is the one to report
            throw error
        }
        try Namespaces.enter(home, what: "the caller's namespace")
        return result
    }

    /// Moves the calling thread into the namespace pinned at `pin`.
    public static func join(pin: String) throws {
        try Namespaces.enter(try Descriptor.open(pin, O_RDONLY), what: pin)
    }

    /// Moves the calling thread back to the host namespace `host` (an fd
    /// PAM keeps between open and close: a CLOEXEC duplicate is used, so no
    /// thread of a multithreaded caller can fork-exec a copy of ours).
    public static func returnToHost(_ host: Int32) throws {
        let copy = try sys("fcntl", "F_DUPFD_CLOEXEC") { fcntl(host, F_DUPFD_CLOEXEC, 0) }
        try Namespaces.enter(Descriptor(adopting: copy), what: "host namespace")
    }

    /// Changes the calling thread's directory to `home`, or to / when it
    /// cannot (the errno is returned to be logged).
    public static func enterHome(_ home: String) -> Int32? {
        if chdir(home) == 0 { return nil }
        let code = errno
        _ = chdir("/")
        return code
    }
}
