// What the running kernel is, and what it lets a session's processes do.
import CLinux
import Glibc

public enum Kernel {
    /// (major, minor) of the running kernel, from uname(2).
    public static func version() -> (Int, Int)? {
        var name = utsname()
        guard uname(&name) == 0 else { return nil }
        let release = withUnsafePointer(to: name.release) {
            $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) }
        }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }

    /// This boot's id: numbers recorded in an earlier boot (namespace
    /// inodes, device numbers) name nothing of ours in this one.
    public static func bootID() -> String {
        ((try? Files.read("/proc/sys/kernel/random/boot_id")) ?? "").filter { $0 != "\n" }
    }
}

/// ioctls a session's processes may not make, refused by a seccomp filter
/// on the thread that opens the session (and so on everything it starts).
public enum RefusedIoctls: Int32 {
    /// btrfs subvolumes and snapshots (they escape a root's quota group).
    case subvolumeCreation = 1  // LC_REFUSE_SUBVOLUME_CREATION
    /// A file's project id and a directory's inherit flag (they move files
    /// out of a root's project quota).
    case projectChanges = 2  // LC_REFUSE_PROJECT_CHANGES

    /// From now on, the calling thread and every process it starts fail
    /// these ioctls with EPERM. Nothing when the thread refuses them already.
    public func refuseOnThisThread() throws {
        try sys("seccomp", "SECCOMP_SET_MODE_FILTER") { lc_refuse_ioctls(rawValue) }
    }

    /// Whether the calling thread refuses these already.
    public var refusedOnThisThread: Bool { lc_refused_ioctl_kinds() & rawValue != 0 }
}
