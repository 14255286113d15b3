// Mount calls and namespace switching. These act on the calling thread's
// mount namespace: the PAM caller's thread is the one that later forks the
// user's shell, so that thread is the one that moves.
import CLinux
import LoginChrootCore
import Glibc

public enum Mounts {
    public static func mount(source: String, target: String, type: String?, flags: UInt, data: String? = nil) throws {
        try sys("mount", target) {
            Glibc.mount(source, target, type, flags, data)
        }
    }

    public static func bind(_ source: String, onto target: String, recursive: Bool) throws {
        try mount(source: source, target: target, type: nil, flags: UInt(MS_BIND) | (recursive ? UInt(MS_REC) : 0))
    }

    /// Makes a bind read-only after the fact, with every mount below it
    /// when `recursive` (a remount would only reach the top one).
    public static func makeReadOnly(_ target: String, recursive: Bool) throws {
        try sys("mount_setattr", target) { lc_make_readonly(target, recursive ? 1 : 0) }
    }

    /// nodev and noatime on the mount at `target` (nosuid too when asked):
    /// for a session root, whose device nodes must open nothing.
    public static func harden(_ target: String, nosuid: Bool) throws {
        try sys("mount_setattr", target) { lc_harden_mount(target, nosuid ? 1 : 0) }
    }

    public static func setPropagation(_ target: String, _ flag: Int, recursive: Bool) throws {
        try mount(source: "none", target: target, type: nil, flags: UInt(flag) | (recursive ? UInt(MS_REC) : 0))
    }

    public static func unmount(_ target: String, detach: Bool = false) throws {
        try sys("umount2", target) { umount2(target, detach ? Int32(MNT_DETACH) : 0) }
    }

    /// One line of mountinfo: the mount's id, its filesystem's device (the
    /// superblock's, which mappings of its files show), where it is
    /// mounted, and the filesystem type.
    public struct Entry: Equatable {
        public var id: UInt64
        public var device: UInt64
        public var mountPoint: String
        public var type: String
    }

    /// Every mount in the calling thread's namespace, in mountinfo order
    /// (later mounts stack on earlier). Parsed as bytes: every login reads
    /// it several times, and with many sessions open the table grows.
    public static func table() -> [Entry] {
        guard let file = try? Descriptor.open("/proc/thread-self/mountinfo", O_RDONLY | O_NOFOLLOW),
              let bytes = try? file.readAll() else { return [] }
        return parseTable(bytes)
    }

    /// The entries of a mountinfo file's content; lines it cannot read are skipped.
    public static func parseTable(_ bytes: [UInt8]) -> [Entry] {
        func number(_ field: Range<Int>) -> UInt64 { UInt64(String(decoding: bytes[field], as: UTF8.self)) ?? 0 }
        var table: [Entry] = []
        var fields: [Range<Int>] = []
        var start = 0
        for end in 0...bytes.count {
            let atLineEnd = end == bytes.count || bytes[end] == UInt8(ascii: "\n")
            guard atLineEnd || bytes[end] == UInt8(ascii: " ") else { continue }
            if end > start { fields.append(start..<end) }
            start = end + 1
            guard atLineEnd else { continue }
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER"
            if fields.count > 4,
               let dash = fields.indices.dropFirst(5).first(where: { fields[$0].count == 1 && bytes[fields[$0].lowerBound] == UInt8(ascii: "-") }),
               dash + 1 < fields.count {
                let device = bytes[fields[2]].split(separator: UInt8(ascii: ":")).map { UInt64(String(decoding: $0, as: UTF8.self)) ?? 0 }
                let (major, minor) = device.count == 2 ? (device[0], device[1]) : (0, 0)  // glibc's makedev:
                table.append(Entry(id: number(fields[0]),
                                   device: ((major & 0xfffff000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffffff00) << 12) | (minor & 0xff),
                                   mountPoint: unescapeMountinfo(bytes[fields[4]]),
                                   type: String(decoding: bytes[fields[dash + 1]], as: UTF8.self)))
            }
            fields.removeAll(keepingCapacity: true)
        }
        return table
    }

    /// The id of the mount that `path` is on (a magic link in /proc is
    /// followed to what it names), or nil.
    public static func mountID(of path: String) -> UInt64? {
        let id = lc_mount_id(path)
        return id < 0 ? nil : UInt64(id)
    }

    /// Whether something is mounted at exactly `path`: one statx, where the
    /// kernel can tell (Linux 5.8+), else a read of the mount table.
    public static func isMountPoint(_ path: String) -> Bool {
        switch lc_is_mount_root(path) {
        case 0: return false
        case 1: return true
        default: return filesystemType(at: path) != nil
        }
    }

    /// The filesystem type mounted at exactly `path` (the topmost), if any.
    public static func filesystemType(at path: String) -> String? {
        table().last(where: { $0.mountPoint == path })?.type
    }

    private static func unescapeMountinfo(_ field: ArraySlice<UInt8>) -> String {
        // mountinfo escapes space, tab, newline and backslash as \ooo.
        var bytes: [UInt8] = []
        var rest = field
        while let byte = rest.first {
            if byte == UInt8(ascii: "\\"), rest.count >= 4,
               let value = UInt8(String(decoding: rest.dropFirst().prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                rest = rest.dropFirst(4)
            } else {
                bytes.append(byte)
                rest = rest.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

public enum Namespaces {
    /// The calling thread's mount namespace, as an fd usable with setns.
    public static func openCurrentMountNamespace() throws -> Descriptor {
        try Descriptor.open("/proc/thread-self/ns/mnt", O_RDONLY)
    }

    /// Gives the calling thread its own filesystem info and a new mount
    /// namespace. Works in multithreaded callers (gdm's worker): CLONE_FS is
    /// unshared for this thread only.
    public static func unshareMountNamespace() throws {
        try sys("unshare", "CLONE_NEWNS") { lc_unshare(LC_CLONE_FS | LC_CLONE_NEWNS) }
    }

    /// Moves the calling thread into the mount namespace `fd`; its root and
    /// cwd become that namespace's root. CLONE_FS is unshared first, because
    /// setns(CLONE_NEWNS) fails with EINVAL while threads share fs info.
    public static func enter(_ fd: Descriptor, what: String) throws {
        try sys("unshare", "CLONE_FS") { lc_unshare(LC_CLONE_FS) }
        try sys("setns", what) { lc_setns(fd.raw, LC_CLONE_NEWNS) }
    }

    /// Makes `newRoot` the root of this namespace and drops the old root.
    public static func pivotRoot(to newRoot: String) throws {
        try sys("chdir", newRoot) { chdir(newRoot) }
        try sys("pivot_root", newRoot) { lc_pivot_root(".", ".") }
        // The old root is now stacked on "/"; detach it so no host path stays reachable.
        try Mounts.unmount(".", detach: true)
        try sys("chdir", "/") { chdir("/") }
    }

    /// Gives the calling thread a new mount namespace, pinned at `path` by a
    /// bind made from `host`, and leaves the thread in the new namespace.
    ///
    /// The kernel refuses (EINVAL) to bind a mount namespace's nsfs file
    /// unless that namespace's id is greater than the binder's (its guard
    /// against reference loops), and on recent kernels (seen on 6.18) the
    /// ids come from per-CPU batches: a namespace made on one CPU can get a
    /// smaller id than an older one made on another. So a refused namespace
    /// is dropped and made again on each CPU in turn; the CPU that made
    /// `host` always hands out greater ids. The thread's CPU affinity is
    /// restored afterwards.
    public static func unshareAndPin(at path: String, from host: Descriptor) throws -> Descriptor {
        var original: [Int32]? = nil  // read at the first move: almost every pin works at once
        defer { if let original, !original.isEmpty { _ = lc_set_thread_cpus(original, Int32(original.count)) } }
        var refusal: Error?
        // First where the thread is; then on each configured CPU. Moving
        // fails (and is skipped) for CPUs that are offline or outside the
        // caller's cpuset.
        for cpu in [nil] + (0..<max(1, Int32(sysconf(Int32(_SC_NPROCESSORS_CONF))))).map(Optional.some) {
            if var cpu {
                if original == nil { original = threadCPUs() }
                guard original?.isEmpty == false, lc_set_thread_cpus(&cpu, 1) == 0 else { continue }
            }
            try unshareMountNamespace()
            let session = try openCurrentMountNamespace()
            try enter(host, what: "host namespace")
            do {
                try pin(session, at: path)
            } catch let error as SystemError where error.call == "mount" && error.errno == EINVAL {
                refusal = error
                continue
            }
            try enter(session, what: "session namespace")
            return session
        }
        throw refusal ?? SystemError(call: "mount", path: path, errno: EINVAL)
    }

    private static func threadCPUs() -> [Int32] {
        var cpus = [Int32](repeating: 0, count: 4096)
        let count = lc_thread_cpus(&cpus, Int32(cpus.count))
        return count > 0 ? Array(cpus.prefix(Int(count))) : []
    }

    /// Keeps the namespace alive after its processes are gone by binding its
    /// nsfs file onto `path` (as `ip netns` does).
    public static func pin(_ namespace: Descriptor, at path: String) throws {
        let fd = try sys("open", path) { Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        Glibc.close(fd)
        do {
            try Mounts.bind(namespace.procPath, onto: path, recursive: false)
        } catch {
            unlink(path)
            throw error
        }
    }

    /// The inode of the namespace pinned at `path`, or nil when nothing is
    /// pinned there. An empty file left where a pin was is on the state
    /// directory's filesystem, never nsfs: the magic number tells them apart.
    public static func pinnedInode(at path: String) -> UInt64? {
        guard let fd = try? Descriptor.open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK),
              lc_filesystem_magic(fd.procPath) == nsfsMagic, let info = try? fd.stat() else { return nil }
        return UInt64(info.st_ino)
    }

    private static let nsfsMagic: Int64 = 0x6e73_6673  // NSFS_MAGIC

    public static func unpin(_ path: String) throws {
        if Files.exists(path) {
            do { try Mounts.unmount(path, detach: true) } catch let error as SystemError where error.errno == EINVAL {}
            try Files.remove(path)
        }
    }
}
