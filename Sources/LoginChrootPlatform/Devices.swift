// btrfs subvolumes and quotas, project quotas, loop devices and fs-verity (ioctls).
import CLinux
import Glibc
import LoginChrootCore

public enum Btrfs {
    /// Snapshots the subvolume at `source` as `name` inside `parent`.
    public static func snapshot(source: Descriptor, into parent: Descriptor, name: String, readOnly: Bool) throws {
        try sys("BTRFS_IOC_SNAP_CREATE_V2", name) { checkedName(lc_btrfs_snapshot(parent.raw, source.raw, name, readOnly ? 1 : 0)) }
    }

    public static func createSubvolume(in parent: Descriptor, name: String) throws {
        try sys("BTRFS_IOC_SUBVOL_CREATE_V2", name) { checkedName(lc_btrfs_create_subvolume(parent.raw, name)) }
    }

    /// Makes the subvolume at `subvolume` read-only: nothing in it can change after.
    public static func makeReadOnly(_ subvolume: Descriptor, path: String) throws {
        try sys("BTRFS_IOC_SUBVOL_SETFLAGS", path) { lc_btrfs_make_read_only(subvolume.raw) }
    }

    /// Deletes the subvolume `name` inside `parent`. EBUSY while anything
    /// (a mount in some namespace) still uses it.
    public static func destroySubvolume(in parent: Descriptor, name: String) throws {
        try sys("BTRFS_IOC_SNAP_DESTROY", name) { checkedName(lc_btrfs_destroy_subvolume(parent.raw, name)) }
    }

    /// Whether deleted subvolumes of the filesystem of `fd` still hold
    /// space: the kernel reclaims it in the background, after the delete.
    public static func deletionsPending(on fd: Descriptor, path: String) throws -> Bool {
        try sys("BTRFS_IOC_TREE_SEARCH", path) { lc_btrfs_deletions_pending(fd.raw) } == 1
    }

    /// Commits the filesystem's transaction: space freed since the last
    /// commit becomes usable only then.
    public static func commit(_ fd: Descriptor, path: String) throws {
        try sys("BTRFS_IOC_SYNC", path) { lc_btrfs_commit(fd.raw) }
    }

    /// Turns on simple quotas on the filesystem of `fd` (nothing when quotas
    /// are on already, in either mode: see quotaMode).
    public static func enableSimpleQuotas(_ fd: Descriptor, path: String) throws {
        try sys("BTRFS_IOC_QUOTA_CTL", path) { lc_btrfs_enable_simple_quotas(fd.raw) }
    }

    /// "squota", "qgroup" (full accounting), or nil while quotas are off.
    public static func quotaMode(_ fd: Descriptor, path: String) throws -> String? {
        var fsid = [CChar](repeating: 0, count: 37)
        try sys("BTRFS_IOC_FS_INFO", path) { lc_btrfs_fsid(fd.raw, &fsid) }
        let directory = "/sys/fs/btrfs/\(string(fromCBuffer: fsid))/qgroups"
        guard Files.isDirectory(directory) else { return nil }
        // Kernels before 6.7 have only full accounting, and no mode file.
        return (try? Files.read(directory + "/mode"))?.split(separator: "\n").first.map(String.init) ?? "qgroup"
    }

    /// Limits what the subvolume open at `subvolume` may hold to `bytes`.
    public static func limit(_ subvolume: Descriptor, toBytes bytes: UInt64, path: String) throws {
        try sys("BTRFS_IOC_QGROUP_LIMIT", path) { lc_btrfs_limit_subvolume(subvolume.raw, bytes) }
    }

    /// A subvolume's root directory always has inode 256.
    public static func isSubvolume(_ info: Glibc.stat) -> Bool { info.st_ino == 256 }

    private static func checkedName(_ rc: Int32) -> Int32 {
        if rc == -2 { errno = ENAMETOOLONG; return -1 }
        return rc
    }
}

/// Project quotas (ext4 made with `-O quota,project` and mounted with
/// `prjquota`, or xfs with `prjquota`): a limit on what the files of one
/// project id may hold, wherever they are on the filesystem.
public enum ProjectQuota {
    /// Whether the filesystem of `fd` enforces project quota limits.
    public static func isEnforced(on fd: Descriptor) -> Bool { lc_project_quota_enforced(fd.raw) == 1 }

    /// Whether project `id` holds anything on the filesystem of `fd`.
    public static func isInUse(_ id: UInt32, on fd: Descriptor, path: String) throws -> Bool {
        try sys("quotactl_fd(Q_GETQUOTA)", path) { lc_project_in_use(fd.raw, id) } == 1
    }

    /// Limits project `id` to `bytes` (0: no limit).
    public static func limit(_ id: UInt32, toBytes bytes: UInt64, on fd: Descriptor, path: String) throws {
        try sys("quotactl_fd(Q_SETQUOTA)", path) { lc_project_limit(fd.raw, id, bytes) }
    }

    /// The project id of the file open at `fd`.
    public static func project(of fd: Descriptor, path: String) throws -> UInt32 {
        var id: UInt32 = 0
        try sys("FS_IOC_FSGETXATTR", path) { lc_project_of(fd.raw, &id) }
        return id
    }

    /// Gives the directory open at `fd` project `id`, which what is made
    /// below it inherits.
    public static func assign(_ id: UInt32, to fd: Descriptor, path: String) throws {
        try sys("FS_IOC_FSSETXATTR", path) { lc_assign_project(fd.raw, id) }
    }
}

public enum Loop {
    /// Attaches `file` to a free loop device that detaches itself once its
    /// last user (the returned fd, then a device-mapper table) lets go.
    /// `readOnly`: the device is read-only and reads with direct I/O.
    public static func attach(_ file: String, readOnly: Bool = false) throws -> (path: String, holder: Descriptor) {
        let backing = try Descriptor.open(file, (readOnly ? O_RDONLY : O_RDWR) | O_NOFOLLOW)
        var number: Int32 = -1
        let loop = Descriptor(adopting: try sys("LOOP_CONFIGURE", file) { lc_loop_attach(backing.raw, readOnly ? 1 : 0, &number) })
        return ("/dev/loop\(number)", loop)
    }

    /// Mounts the filesystem image `file` at `target` through a loop device
    /// that detaches itself when the filesystem is unmounted.
    public static func mountImage(_ file: String, at target: String, type: String, options: String? = nil,
                                  readOnly: Bool = false) throws {
        // The holder is kept until the mount exists; then the mount is the
        // device's only user, and autoclear detaches it at unmount.
        let (device, holder) = try attach(file, readOnly: readOnly)
        try Mounts.mount(source: device, target: target, type: type, flags: readOnly ? UInt(MS_RDONLY) : 0, data: options)
        withExtendedLifetime(holder) {}
    }
}

/// fs-verity: a file whose every read the kernel checks against a Merkle
/// tree of its contents, and which nothing can write to again. Its digest
/// (SHA-256 of the tree's root and parameters) names the contents.
public enum Verity {
    /// Turns fs-verity on for the file open read-only at `fd` (no writer
    /// may have it open). False when its filesystem has no fs-verity: a
    /// kernel without it, ext4 without the verity feature, tmpfs, 9p.
    public static func enable(_ fd: Descriptor, path: String) throws -> Bool {
        do {
            try sys("FS_IOC_ENABLE_VERITY", path) { lc_verity_enable(fd.raw) }
            return true
        } catch let error as SystemError where [EOPNOTSUPP, ENOTTY].contains(error.errno) {
            return false
        }
    }

    /// What fs-verity says of a file.
    public enum Seal: Equatable {
        /// Sealed; its digest, "sha256:HEX".
        case sealed(String)
        /// Not sealed, on a filesystem that has fs-verity.
        case unsealed
        /// Its filesystem (or this kernel) has no fs-verity.
        case unsupported
    }

    public static func seal(of fd: Descriptor, path: String) throws -> Seal {
        var digest = [UInt8](repeating: 0, count: 64)
        let size: Int32
        do {
            size = try sys("FS_IOC_MEASURE_VERITY", path) { lc_verity_measure(fd.raw, &digest, Int32(digest.count)) }
        } catch let error as SystemError where error.errno == ENODATA {
            return .unsealed
        } catch let error as SystemError where [EOPNOTSUPP, ENOTTY].contains(error.errno) {
            return .unsupported
        }
        let hex = Array("0123456789abcdef")
        return .sealed("sha256:" + String(digest.prefix(Int(size)).flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 15)]] }))
    }
}

public enum Erofs {
    /// Mounts the erofs image `file` read-only at `target`: from the file
    /// itself where the kernel can (Linux 6.12 and newer, with
    /// EROFS_FS_BACKED_BY_FILE), reading it with direct I/O where the kernel
    /// has `directio` (else the file's pages would be cached beside the
    /// files' own, twice the memory); otherwise through a read-only
    /// direct-I/O loop device that detaches itself at unmount. Never
    /// through util-linux.
    public static func mount(_ file: String, at target: String) throws {
        if try mountFromFile(file, at: target, options: "directio") { return }
        if try mountFromFile(file, at: target, options: nil) { return }
        try Loop.mountImage(file, at: target, type: "erofs", readOnly: true)
    }

    /// False when this kernel cannot mount erofs from a file (ENOTBLK,
    /// EOPNOTSUPP) or does not know `options` (EINVAL).
    private static func mountFromFile(_ file: String, at target: String, options: String?) throws -> Bool {
        do {
            try Mounts.mount(source: file, target: target, type: "erofs", flags: UInt(MS_RDONLY) | UInt(MS_NODEV),
                             data: options)
            return true
        } catch let error as SystemError where [ENOTBLK, EOPNOTSUPP, EINVAL].contains(error.errno) {
            return false
        }
    }

    /// Whether an erofs filesystem is mounted at `path` (one statfs: logins ask).
    public static func isMounted(at path: String) -> Bool { lc_filesystem_magic(path) == superMagic }

    private static let superMagic: Int64 = 0xE0F5_E1E2  // EROFS_SUPER_MAGIC_V1
}
