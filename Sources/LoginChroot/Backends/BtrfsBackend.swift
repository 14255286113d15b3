// btrfs: master, generations and sessions are subvolumes of one filesystem;
// snapshots and deletes go through the btrfs ioctls (never btrfs-progs).
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public final class BtrfsBackend: SnapshotBackend {
    public let kind = BackendKind.btrfs
    public let rootsOutliveTheirGeneration = true
    let store: StoreLayout
    let minFreePercent: Int
    let rootSize: UInt64
    /// The loop file the store is made on and mounted from ([store] image;
    /// empty: the admin mounts a btrfs filesystem at the store's path).
    let image: String
    let imageSize: UInt64

    public init(config: Config) {
        store = StoreLayout(path: config.storePath)
        minFreePercent = config.minFreePercent
        rootSize = config.rootSize
        image = config.storeImage
        imageSize = config.storeImageSize
    }

    public var requiredPrograms: [RequiredProgram] { image.isEmpty ? [] : [RequiredProgram("mkfs.btrfs", in: "btrfs-progs")] }

    /// The loop file and its btrfs filesystem.
    public func createStore() throws {
        guard !image.isEmpty, !Files.exists(image) else { return }
        try Files.makeDirectories(parentDirectory(of: image))
        try Files.createSparse(image, size: imageSize)
        let made = try Processes.runQuietly(["mkfs.btrfs", "-q", image])
        guard made.status == 0 else {
            try? Files.remove(image)
            throw SetupError("mkfs.btrfs \(image) failed (exit \(made.status)):\n\(made.output)",
                             fix: "see mkfs.btrfs's words above; the store image was removed, so init can run again")
        }
    }

    public func bringOnline() throws {
        if Mounts.filesystemType(at: store.path) != "btrfs" {
            guard !image.isEmpty else {
                throw SetupError("\(store.path) is not a mounted btrfs filesystem and [store] image is empty",
                                 fix: "mount your btrfs store at \(store.path), or set [store] image")
            }
            guard Files.exists(image) else {
                throw SetupError("store image \(image) does not exist", fix: "run 'loginchroot init'")
            }
            try Files.makeDirectories(store.path)
            try Loop.mountImage(image, at: store.path, type: "btrfs")
        }
        try enableQuotas()
    }

    /// A store image `start` mounted is unmounted; a store the admin mounts stays.
    public func takeOffline() throws -> String? {
        guard !image.isEmpty, Mounts.filesystemType(at: store.path) == "btrfs" else { return nil }
        try Mounts.unmount(store.path)
        return "\(store.path) unmounted"
    }

    public func checkStore() throws {
        guard Mounts.filesystemType(at: store.path) == "btrfs" else {
            throw SetupError("store \(store.path) is not a mounted btrfs filesystem",
                             fix: "run 'loginchroot start' (or 'loginchroot init' on a new machine)")
        }
        try store.checkInitialized(backend: kind)
        // Full accounting would charge a root for the generation it shares,
        // and recharge it when that generation is removed.
        switch try Btrfs.quotaMode(try Descriptor.openDirectory(store.path), path: store.path) {
        case "squota": break
        case nil:
            throw SetupError("quotas are off on the btrfs store \(store.path): roots would have no space limit",
                             fix: "run 'loginchroot start'")
        case let mode?:
            throw SetupError("the btrfs store \(store.path) has quotas in mode '\(mode)', not simple quotas",
                             fix: "with no root open (see 'loginchroot sessions'), run 'btrfs quota disable \(store.path)', then 'loginchroot start'")
        }
    }

    /// Simple quotas (Linux 6.7): a snapshot is charged only for what it
    /// writes itself, whatever becomes of the generation it came from.
    func enableQuotas() throws {
        do {
            try Btrfs.enableSimpleQuotas(try Descriptor.openDirectory(store.path), path: store.path)
        } catch let error as SystemError where error.errno == EINVAL {
            throw SetupError("this kernel has no btrfs simple quotas, which give each root its limit (root_size)",
                             fix: "boot Linux 6.7 or newer (Debian 12: enable bookworm-backports as backports.debian.org says, then 'apt install -t bookworm-backports linux-image-amd64' and reboot), or use the dm-thin backend")
        }
    }

    /// A subvolume nested in a root has a quota group of its own, outside
    /// the root's limit (and its creator may name that group's parents).
    public func confineSession() throws { try RefusedIoctls.subvolumeCreation.refuseOnThisThread() }

    public func currentGeneration() throws -> Generation { try store.currentGeneration() }
    public func generations() throws -> [Generation] { try store.generations() }

    public func prepare(_ key: RootKey, from generation: Generation) throws -> RootLayout {
        try StoreLayout.refuseNewRoot(below: minFreePercent, at: store.path)
        let source = try Descriptor.openDirectory(store.generation(generation))
        let parent = try Descriptor.openDirectory(store.sessionsDir)
        guard !RefusedIoctls.subvolumeCreation.refusedOnThisThread else {
            throw SetupError("this thread of the PAM client opened a session before, and may make no snapshot since",
                             fix: "open each session in a process or thread of its own, as sshd, login, su and display managers do")
        }
        try Btrfs.snapshot(source: source, into: parent, name: key.value, readOnly: false)
        // Before anything is written there: removing it on failure is the caller's.
        try Btrfs.limit(try Descriptor.openDirectory(store.session(key)), toBytes: rootSize, path: store.session(key))
        return RootLayout(mounts: [.bind(source: store.session(key), target: "")], rootSubpath: "")
    }

    public func remove(_ key: RootKey) throws {
        try destroy(in: store.sessionsDir, name: key.value)
    }

    public func rootSnapshots() throws -> [RootKey] { try store.sessionKeys() }

    public func createMaster() throws {
        try store.createDirectories()
        if !Files.isDirectory(store.master) {
            try Btrfs.createSubvolume(in: try Descriptor.openDirectory(store.path), name: "master")
        }
    }

    public func masterLayout() throws -> RootLayout { store.masterLayout }
    public func generationLayout(_ generation: Generation) throws -> RootLayout { store.generationLayout(generation) }

    public func publish() throws -> Generation {
        try publishNext { stable, temporary in
            try Btrfs.snapshot(source: try Descriptor.openDirectory(store.master), into: stable, name: temporary, readOnly: true)
        }
    }

    /// A subvolume of its own, filled by copies (hardlinks cannot reach
    /// into it from outside; reflinks can), then made read-only.
    public func publish(tree fill: (_ directory: String, _ mayHardlink: Bool) throws -> Void) throws -> Generation? {
        try publishNext { stable, temporary in
            try Btrfs.createSubvolume(in: stable, name: temporary)
            let path = joinPath(store.stable, temporary)
            try fill(path, false)
            try Btrfs.makeReadOnly(try Descriptor.openDirectory(path), path: path)
        }
    }

    /// Makes the read-only subvolume `make` makes under a temporary name in
    /// stable/, renames it, makes it current: a crash never leaves a
    /// half-made generation under a real name (the next publish and gc
    /// remove *.tmp; so does a failure here). The caller holds master.lock.
    private func publishNext(_ make: (_ stable: Descriptor, _ temporary: String) throws -> Void) throws -> Generation {
        _ = try finishInterruptedPublishes()
        let generation = try store.nextGeneration()
        let stable = try Descriptor.openDirectory(store.stable)
        let temporary = generation.name + ".tmp"
        do { try make(stable, temporary) } catch {
            _ = try? finishInterruptedPublishes()
            throw error
        }
        CrashPoint.reached("publish.snapshot-made")
        try sys("renameat", temporary) { renameat(stable.raw, temporary, stable.raw, generation.name) }
        CrashPoint.reached("publish.renamed")
        try store.setCurrent(generation)
        return generation
    }

    public func removeGeneration(_ generation: Generation) throws {
        try destroy(in: store.stable, name: generation.name)
    }

    /// Removes leftovers of interrupted publishes.
    public func finishInterruptedPublishes() throws -> [String] {
        try store.finishInterruptedPublishes { try destroy(in: store.stable, name: $0) }
    }

    public func usage() throws -> SpaceUsage {
        var usage = try store.usage()
        usage.rootLimit = RootLimit(bytes: rootSize, howToLower: "lower root_size in [store] (roots made after it get the new limit), or give the store image more space")
        return usage
    }

    /// btrfs frees a deleted snapshot's space in a kernel thread, later,
    /// and the freed space is usable only after a commit: a burst of
    /// logouts and logins can outrun it, most of all once a full disk has
    /// left no unallocated space for metadata to grow into. Waits only when
    /// deletions are pending: a store that is simply full fails at once.
    public func awaitReclaimedSpace(after error: Error, seconds: Int) -> Bool {
        guard (error as? SystemError)?.errno == ENOSPC,
              let filesystem = try? Descriptor.openDirectory(store.path),
              (try? Btrfs.deletionsPending(on: filesystem, path: store.path)) == true else { return false }
        let deadline = Deadline(seconds: Double(seconds))
        // The commit hands the latest deletions to the cleaner and wakes it.
        guard (try? Btrfs.commit(filesystem, path: store.path)) != nil else { return false }
        _ = deadline.poll { (try? Btrfs.deletionsPending(on: filesystem, path: store.path)) != true }
        // Each snapshot the cleaner dropped frees space: a retry may succeed
        // after a partial wait too, once this commit makes it usable.
        return (try? Btrfs.commit(filesystem, path: store.path)) != nil
    }

    private func destroy(in directory: String, name: String) throws {
        let parent = try Descriptor.openDirectory(directory)
        guard let info = try parent.entryInfo(name, path: joinPath(directory, name)) else { return }
        guard Btrfs.isSubvolume(info) else {
            throw SetupError("\(joinPath(directory, name)) is not a subvolume", fix: "inspect it and remove it by hand")
        }
        do {
            try Btrfs.destroySubvolume(in: parent, name: name)
        } catch let error as SystemError where error.errno == ENOTEMPTY {
            // A user made subvolumes inside the session: those go first.
            let top = Descriptor(adopting: try sys("openat", name) { openat(parent.raw, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) })
            try destroyNested(in: top)
            try Btrfs.destroySubvolume(in: parent, name: name)
        }
    }

    /// Deletes, deepest first, every subvolume below `top`, however deep
    /// a user nested them (TreeWalk: a few fds, bounded memory). Enters
    /// directories of the same subvolume and nested subvolumes, never other
    /// mounts, never symlinks.
    private func destroyNested(in top: Descriptor) throws {
        try TreeWalk.postOrder(top, descend: { parent, child in
            child.st_dev == parent.st_dev || Btrfs.isSubvolume(child)
        }, file: { _, _, _ in }, leave: { parent, name, info, parentInfo in
            if info.st_dev != parentInfo.st_dev { try Btrfs.destroySubvolume(in: parent, name: name) }
        })
    }
}
