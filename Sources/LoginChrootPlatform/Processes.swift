// Processes and cgroups: finding and killing everything a session left.
import CLinux
import LoginChrootCore
import Glibc

/// What identifies a session root to the /proc scan (0: unknown).
public struct RootIdentity: Equatable {
    public var namespaceInode: UInt64
    public var rootMount: UInt64
    /// The device of the root's directories.
    public var rootDevice: UInt64
    /// The device of the root's filesystem (its superblock's), which
    /// mappings of its files show: the root's own device, but on btrfs the
    /// whole store's (a subvolume reports a device of its own).
    public var filesystemDevice: UInt64
    /// The device of the files an overlay root writes (its upper layer's),
    /// which mappings of them show before Linux 6.8 (since, the overlay's);
    /// 0 where that device is shared with other roots, or the root is no
    /// overlay.
    public var mappedDevice: UInt64
    /// The root's user. Only their processes and root's can reach into the
    /// root from outside (through /proc/PID/root, which takes ptrace rights,
    /// or setns and chroot); others only get what they are handed.
    public var owner: UInt32
    public init(namespaceInode: UInt64, rootMount: UInt64, rootDevice: UInt64 = 0, filesystemDevice: UInt64 = 0,
                mappedDevice: UInt64 = 0, owner: UInt32 = 0) {
        self.namespaceInode = namespaceInode; self.rootMount = rootMount; self.rootDevice = rootDevice
        self.filesystemDevice = filesystemDevice; self.mappedDevice = mappedDevice; self.owner = owner
    }

    /// A device as /proc/PID/maps writes it ("fe:01").
    static func inMaps(_ device: UInt64) -> String {
        func hex(_ value: UInt64) -> String {
            let digits = String(value, radix: 16)
            return digits.count < 2 ? "0" + digits : digits
        }
        return hex(((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff)) + ":" + hex((device & 0xff) | ((device >> 12) & ~0xff))
    }

    /// Devices whose mappings are the root's files, and the one whose
    /// mappings may be (a btrfs store's: the mapped file itself tells).
    var devicesInMaps: (own: [String], shared: String?) {
        let own = [mappedDevice, filesystemDevice == rootDevice ? rootDevice : 0].filter { $0 != 0 }
        let shared = filesystemDevice != 0 && filesystemDevice != rootDevice ? filesystemDevice : 0
        return (own.map(RootIdentity.inMaps), shared == 0 ? nil : RootIdentity.inMaps(shared))
    }
}

public enum Processes {
    /// State and start time (clock ticks since boot) of `pid`, from /proc/PID/stat.
    static func procStat(of pid: Int32) -> (state: String, startTime: UInt64)? {
        guard let text = try? Files.read("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        // After "comm)": state is field 3 of the line, starttime field 22.
        let fields = text[text.index(after: close)...].words
        guard fields.count > 19, let start = UInt64(fields[19]) else { return nil }
        return (fields[0], start)
    }

    public static func startTime(of pid: Int32) -> UInt64? { procStat(of: pid)?.startTime }

    /// True while `pid` is the same process (not a recycled pid) and not a zombie.
    public static func isAlive(pid: Int32, startTime: UInt64) -> Bool {
        guard let current = procStat(of: pid) else { return false }
        return current.startTime == startTime && current.state != "Z"
    }

    public static func allPids() -> [Int32] {
        ((try? Files.listDirectory("/proc")) ?? []).compactMap { Int32($0) }
    }

    /// The real uid of `pid` (the first of /proc/PID/status's "Uid:" line).
    static func realUID(of pid: Int32) -> UInt32? {
        guard let text = try? Files.read("/proc/\(pid)/status"),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { return nil }
        return line.words.dropFirst().first.flatMap { UInt32($0) }
    }

    /// Whether `pid`, which runs outside the root's cgroups, still uses the
    /// session root: its mount namespace, root or working directory are the
    /// root's, or (for a process of the root's user) any thread's are, or it
    /// has a file open on the root's mount or mapped from its filesystem
    /// (an fd passed out over a socket keeps a root's files readable after
    /// its namespace is gone). Open files by mount id, not device: overlay
    /// gives files the devices of their layers.
    ///
    /// Only the user's processes can reach into their root from outside
    /// (through /proc/PID/root, which takes ptrace rights); another user's
    /// process is in the root only inside its cgroups, which are killed
    /// whole, and costs one call here. A process of root's is the user's
    /// when its real uid is theirs (a setuid program they started);
    /// otherwise only an admin put it in (nsenter), and its threads and
    /// files are the admin's business.
    public static func holdsRoot(_ pid: Int32, _ root: RootIdentity) -> Bool {
        var info = Glibc.stat()
        func onMount(_ path: String) -> Bool { root.rootMount != 0 && Mounts.mountID(of: path) == root.rootMount }
        func onDevice(_ path: String) -> Bool { root.rootDevice != 0 && stat(path, &info) == 0 && UInt64(info.st_dev) == root.rootDevice }
        // A directory by its device: a process in a mount namespace of its
        // own (unshare -m in the root) has copies of the root's mount, with
        // other ids but the same filesystem. The mount is asked only when
        // the device is unknown.
        func inRoot(_ base: String) -> Bool {
            if root.namespaceInode != 0, stat(base + "/ns/mnt", &info) == 0, UInt64(info.st_ino) == root.namespaceInode {
                return true
            }
            return ["/root", "/cwd"].contains { root.rootDevice != 0 ? onDevice(base + $0) : onMount(base + $0) }
        }
        let process = "/proc/\(pid)"
        guard stat(process, &info) == 0 else { return false }
        switch info.st_uid {
        case root.owner: break
        // A kernel thread (most of root's processes) has no executable and
        // holds nothing: one call.
        case 0 where stat(process + "/exe", &info) != 0: return false
        case 0 where realUID(of: pid) == root.owner: break
        case 0: return inRoot(process)
        default: return false
        }
        // A task directory links to itself, its parent and one per thread.
        if stat(process + "/task", &info) == 0 && info.st_nlink <= 3 {
            if inRoot(process) { return true }
        } else {
            for thread in (try? Files.listDirectory(process + "/task")) ?? [] where inRoot("\(process)/task/\(thread)") {
                return true
            }
        }
        for fd in (try? Files.listDirectory(process + "/fd")) ?? [] where onMount("\(process)/fd/\(fd)") { return true }
        let devices = root.devicesInMaps
        guard !devices.own.isEmpty || devices.shared != nil, let maps = try? Descriptor.open(process + "/maps", O_RDONLY),
              let text = try? maps.readAll() else { return false }
        // "ADDRESS PERMS OFFSET MAJOR:MINOR INODE PATH": one read, and a call
        // only for a mapping on a filesystem the root shares with others.
        return text.split(separator: UInt8(ascii: "\n")).contains { line in
            let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 4, omittingEmptySubsequences: true)
            guard fields.count > 3 else { return false }
            if devices.own.contains(where: { fields[3].elementsEqual($0.utf8) }) { return true }
            guard let shared = devices.shared, fields[3].elementsEqual(shared.utf8) else { return false }
            // The mapped file, as stat sees it: on the root's device or not.
            return onDevice(process + "/map_files/" + String(decoding: fields[0], as: UTF8.self))
        }
    }

    /// Kills every process (but `own`) that holds the session root from
    /// outside its cgroups: one pass over /proc, made once the cgroups are
    /// empty. Returns how many it signalled.
    public static func killHoldingRoot(_ root: RootIdentity, excluding own: Int32) -> Int {
        var killed = 0
        for pid in allPids() where pid != own && holdsRoot(pid, root) {
            if kill(pid, ifStill: { holdsRoot($0, root) }) { killed += 1 }
        }
        return killed
    }

    /// SIGKILLs `pid` through a pidfd, and only if `matches` still holds once
    /// the pidfd pins the process: a pid reused between the check and the
    /// kill gets nothing. True when a signal was sent.
    @discardableResult
    public static func kill(_ pid: Int32, ifStill matches: (Int32) -> Bool) -> Bool {
        let pidfd = lc_pidfd_open(pid)
        guard pidfd >= 0 else { return false }  // gone already
        defer { close(pidfd) }
        return matches(pid) && lc_pidfd_kill(pidfd) == 0
    }

    /// Runs `body` where the user who started this login cannot stop or
    /// kill it: kill(2) lets a user signal a process whose real uid is
    /// theirs, and su and login keep the caller's real uid, so it is root's
    /// meanwhile; and the terminal's stop signals (^Z) are blocked. Nothing
    /// a user can signal holds what a login needs for long.
    public static func shielded<T>(_ body: () throws -> T) rethrows -> T {
        var real: uid_t = 0, effective: uid_t = 0, saved: uid_t = 0
        let switched = lc_getresuid(&real, &effective, &saved) == 0 && effective == 0 && real != 0
            && lc_set_real_uid(0) == 0
        var stops = sigset_t()
        sigemptyset(&stops)
        for signal in [SIGTSTP, SIGTTIN, SIGTTOU] { sigaddset(&stops, signal) }
        var previous = sigset_t()
        let blocked = pthread_sigmask(SIG_BLOCK, &stops, &previous) == 0
        defer {
            if blocked { pthread_sigmask(SIG_SETMASK, &previous, nil) }
            if switched { _ = lc_set_real_uid(real) }
        }
        return try body()
    }

    public static func sleep(milliseconds: Int) {
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    /// Runs a program and waits for it, its output on the terminal (CLI
    /// only: the PAM module never spawns).
    public static func run(_ arguments: [String], environment: [String]? = nil) throws -> Int32 {
        try wait(for: try spawn(arguments, environment: environment, output: nil), arguments[0])
    }

    /// What a program run quietly printed, and how it ended.
    public struct Outcome {
        public let status: Int32
        /// The end of what it wrote to stdout and stderr (at most 4 KiB).
        public let output: String
    }

    /// Runs a program with stdout and stderr in an unnamed file and stdin
    /// on /dev/null, so the admin sees what a tool prints only when it
    /// fails (mkfs's notes are noise on success). `waiting` is called about
    /// once a second while it runs, for progress.
    public static func runQuietly(_ arguments: [String], waiting: () -> Void = {}) throws -> Outcome {
        let output = Descriptor(adopting: try sys("memfd_create", arguments[0]) { lc_memfd("loginchroot-output") })
        let pid = try spawn(arguments, environment: nil, output: output.raw)
        var status: Int32 = 0
        // Short pauses first: most runs end within milliseconds, and a whole
        // second's sleep made every publish take a whole number of seconds.
        var pause = 1, sinceProgress = 0
        while try sys("waitpid", arguments[0], { waitpid(pid, &status, WNOHANG) }) == 0 {
            sleep(milliseconds: pause)
            sinceProgress += pause
            if sinceProgress >= 1000 {
                sinceProgress = 0
                waiting()
            }
            pause = min(pause * 2, 50)
        }
        let size = try output.stat().st_size
        try sys("lseek", arguments[0]) { lseek(output.raw, max(0, size - 4096), SEEK_SET) }
        let tail = try output.readAll()
        return Outcome(status: exitStatus(status), output: String(decoding: tail, as: UTF8.self))
    }

    private static func spawn(_ arguments: [String], environment: [String]?, output: Int32?) throws -> pid_t {
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        let env = (environment ?? defaultEnvironment).map { strdup($0) } + [nil]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer {
            argv.forEach { free($0) }
            env.forEach { free($0) }
            posix_spawn_file_actions_destroy(&actions)
        }
        if let output {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, output, 1)
            posix_spawn_file_actions_adddup2(&actions, output, 2)
        }
        let rc = posix_spawnp(&pid, arguments[0], &actions, nil, argv, env)
        guard rc == 0 else { throw SystemError(call: "posix_spawnp", path: arguments[0], errno: rc) }
        return pid
    }

    private static func wait(for pid: pid_t, _ program: String) throws -> Int32 {
        var status: Int32 = 0
        try sys("waitpid", program) { waitpid(pid, &status, 0) }
        return exitStatus(status)
    }

    private static func exitStatus(_ status: Int32) -> Int32 {
        status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Where run() would find `program`: posix_spawnp searches this
    /// process's own PATH. nil when it is not there.
    public static func findProgram(_ program: String) -> String? {
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        return path.split(separator: ":").map { joinPath(String($0), program) }.first { access($0, X_OK) == 0 }
    }

    public static let defaultEnvironment = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root",
    ]
}

/// A cgroup v2 directory, named relative to the cgroup2 mount.
public struct Cgroups {
    public let mountPoint: String

    /// Finds the cgroup2 mount: /sys/fs/cgroup on unified systems,
    /// /sys/fs/cgroup/unified on hybrid ones (a statfs each, as systemd
    /// looks), else wherever the mount table has it.
    public static func find() -> Cgroups? {
        for path in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            if lc_filesystem_magic(path) == cgroup2Magic, Mounts.isMountPoint(path) {
                return Cgroups(mountPoint: path)
            }
        }
        return Mounts.table().first(where: { $0.type == "cgroup2" }).map { Cgroups(mountPoint: $0.mountPoint) }
    }

    private static let cgroup2Magic = 0x6367_7270  // CGROUP2_SUPER_MAGIC

    /// The caller's own cgroup ("0::/path" in /proc/self/cgroup).
    public func current() -> String? {
        (try? Files.read("/proc/self/cgroup")).flatMap(Cgroups.unifiedPath)
    }

    /// The cgroup v2 path in a /proc/PID/cgroup file's content.
    public static func unifiedPath(in text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            return String(line.dropFirst(3))
        }
        return nil
    }

    func path(_ cgroup: String) -> String { joinPath(mountPoint, cgroup) }

    /// The deepest of `cgroup` and its ancestors that no user controls. A
    /// cgroup delegated to a user (systemd's Delegate=, as for
    /// user@UID.service: the directory and cgroup.procs are theirs) lets
    /// them freeze or throttle everything below it and move processes
    /// between its children.
    public func outsideDelegation(_ cgroup: String) -> String {
        func rootsAlone(_ file: String) -> Bool {
            guard let info = try? Files.lstatInfo(file) else { return false }
            return info.st_uid == 0 && info.st_mode & (S_IWGRP | S_IWOTH) == 0
        }
        var reached = "/"
        for component in cgroup.split(separator: "/") {
            let next = joinPath(reached, String(component))
            guard rootsAlone(path(next)), rootsAlone(joinPath(path(next), "cgroup.procs")) else { break }
            reached = next
        }
        return reached
    }

    public func create(_ cgroup: String) throws {
        try Files.makeDirectory(self.path(cgroup))
    }

    /// Moves process `pid` (all its threads) into `cgroup`.
    public func move(pid: Int32, to cgroup: String) throws {
        let procs = joinPath(path(cgroup), "cgroup.procs")
        let fd = try Descriptor.open(procs, O_WRONLY)
        try fd.writeAll(Array(String(pid).utf8), path: procs)
    }

    /// Kills every process in the subtree at once (Linux 5.14+); false when
    /// the kernel has no cgroup.kill.
    public func kill(_ cgroup: String) -> Bool {
        let file = joinPath(path(cgroup), "cgroup.kill")
        guard let fd = try? Descriptor.open(file, O_WRONLY) else { return false }
        return (try? fd.writeAll(Array("1".utf8), path: file)) != nil
    }

    /// Whether process `pid` is in `cgroup` now (not below it).
    public func contains(_ pid: Int32, _ cgroup: String) -> Bool {
        guard let text = try? Files.read("/proc/\(pid)/cgroup") else { return false }
        return text.split(separator: "\n").contains { $0 == "0::" + cgroup }
    }

    /// SIGKILLs every process in `cgroup` but `own`, one by one (where there
    /// is no cgroup.kill, or it would take the caller too).
    public func killEach(in cgroup: String, excluding own: Int32) -> Int {
        var killed = 0
        for pid in pids(cgroup) where pid > 0 && pid != own {
            if Processes.kill(pid, ifStill: { contains($0, cgroup) }) { killed += 1 }
        }
        return killed
    }

    public func pids(_ cgroup: String) -> [Int32] {
        guard let text = try? Files.read(joinPath(path(cgroup), "cgroup.procs")) else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    public func isPopulated(_ cgroup: String) -> Bool {
        guard let text = try? Files.read(joinPath(path(cgroup), "cgroup.events")) else { return false }
        return text.split(separator: "\n").contains("populated 1")
    }

    public func exists(_ cgroup: String) -> Bool { Files.isDirectory(path(cgroup)) }

    public func remove(_ cgroup: String) throws {
        let path = self.path(cgroup)
        try sys("rmdir", path, unless: ENOENT) { rmdir(path) }
    }

    /// Every cgroup below the mount whose last component starts with `prefix`.
    public func find(prefix: String) -> [String] {
        var found: [String] = []
        func walk(_ relative: String, depth: Int) {
            guard depth < 32, let names = try? Files.listDirectory(path(relative)) else { return }
            for name in names where Files.isDirectory(joinPath(path(relative), name)) {
                let child = relative == "/" ? "/" + name : relative + "/" + name
                if name.hasPrefix(prefix) { found.append(child) } else { walk(child, depth: depth + 1) }
            }
        }
        walk("/", depth: 0)
        return found
    }
}
