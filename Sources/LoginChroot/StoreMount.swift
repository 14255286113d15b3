// Bringing the store online: the btrfs store is a filesystem (by default on
// a loop file) mounted at [store] path; the overlay store is a directory;
// the dm-thin store is a directory plus a thin pool assembled after boot.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public enum StoreMount {
    /// Mounts the store if it is not mounted yet. Safe to run at any time.
    public static func ensureMounted(_ config: Config) throws {
        if config.backend == .dmThin {
            try DmThinBackend(config: config).assemblePool()
            return
        }
        guard config.backend == .btrfs else {
            try Files.makeDirectories(config.storePath)
            return
        }
        if Mounts.filesystemType(at: config.storePath) != "btrfs" { try mountImage(config) }
        try BtrfsBackend(config: config).enableQuotas()
    }

    /// The reverse, once no root is open (`stop`, before the package is
    /// removed): unmounts a store image `start` mounted, deactivates a
    /// dm-thin pool. A store the admin mounts is theirs and stays. Returns
    /// what it did.
    public static func takeOffline(_ config: Config) throws -> String? {
        switch config.backend {
        case .dmThin:
            return try DmThinBackend(config: config).deactivatePool() ? "thin pool deactivated" : nil
        case .btrfs:
            guard !config.storeImage.isEmpty, Mounts.filesystemType(at: config.storePath) == "btrfs" else { return nil }
            try Mounts.unmount(config.storePath)
            return "\(config.storePath) unmounted"
        case .overlay:
            return nil
        }
    }

    private static func mountImage(_ config: Config) throws {
        guard !config.storeImage.isEmpty else {
            throw SetupError("\(config.storePath) is not a mounted btrfs filesystem and [store] image is empty",
                             fix: "mount your btrfs store at \(config.storePath), or set [store] image")
        }
        guard Files.exists(config.storeImage) else {
            throw SetupError("store image \(config.storeImage) does not exist", fix: "run 'loginchroot init'")
        }
        try Files.makeDirectories(config.storePath)
        try Loop.mountImage(config.storeImage, at: config.storePath, type: "btrfs")
    }

    /// Creates the loop file and its btrfs filesystem (for `init`).
    public static func createImage(_ config: Config) throws {
        guard config.backend == .btrfs, !config.storeImage.isEmpty, !Files.exists(config.storeImage) else { return }
        try Files.makeDirectories(parentDirectory(of: config.storeImage))
        try Files.createSparse(config.storeImage, size: config.storeImageSize)
        let made = try Processes.runQuietly(["mkfs.btrfs", "-q", config.storeImage])
        guard made.status == 0 else {
            _ = unlink(config.storeImage)
            throw SetupError("mkfs.btrfs \(config.storeImage) failed (exit \(made.status)):\n\(made.output)",
                             fix: "see mkfs.btrfs's words above; the store image was removed, so init can run again")
        }
    }
}
