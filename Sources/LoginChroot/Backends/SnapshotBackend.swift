// The snapshot protocol every backend implements (after containerd's
// snapshotter: prepare, remove, walk, commit, usage). Backends create and
// destroy storage and *describe* mounts; RootNamespaces and the RootAssembler perform them.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

/// How to assemble a root: mounts below a staging directory, and where the
/// finished root ends up.
public struct RootLayout: Equatable {
    public var mounts: [MountSpec]
    public var rootSubpath: String
}

public struct SpaceUsage: Equatable {
    public var totalBytes: UInt64
    public var freeBytes: UInt64
    /// dm-thin only: the pool's metadata device.
    public var metadataTotalBytes: UInt64? = nil
    public var metadataFreeBytes: UInt64? = nil
    /// The most one root can write, where the store enforces a limit per
    /// root, and how an admin makes it smaller.
    public var rootLimit: RootLimit? = nil
}

public struct RootLimit: Equatable {
    public var bytes: UInt64
    public var howToLower: String
}

public protocol SnapshotBackend: AnyObject {
    var kind: BackendKind { get }
    /// True when a root's snapshot stands on its own, so its generation
    /// can be removed while the root is open (not so for overlay's lower layer).
    var rootsOutliveTheirGeneration: Bool { get }

    /// Throws a SetupError naming the fix when the store cannot be used.
    func checkStore() throws
    /// What a login checks before it waits for anything: the store is
    /// there and online. What prepare changes it checks again under its own
    /// lock, so this may skip what checkStore reads (dm-thin: the pool's
    /// status and the metadata, under the pool lock).
    func checkOnline() throws

    /// The programs making this store runs, each with its Debian package
    /// (init checks them before it makes anything; check reports them).
    var requiredPrograms: [RequiredProgram] { get }
    /// Throws, naming what to load, when the running kernel cannot hold
    /// this store (check).
    func checkKernel() throws
    /// Creates what the store lives on when it is missing (init).
    func createStore() throws
    /// Brings the store online after a boot (start, gc, init): mounts it,
    /// or assembles its pool. Safe at any time.
    func bringOnline() throws
    /// The reverse, once no root is open (stop, before the package is
    /// removed). What the admin set up is theirs and stays. Returns what
    /// it did, or nil.
    func takeOffline() throws -> String?

    /// The generation new roots get.
    func currentGeneration() throws -> Generation
    func generations() throws -> [Generation]

    /// Makes the writable snapshot of `generation` for root `key`.
    func prepare(_ key: RootKey, from generation: Generation) throws -> RootLayout
    /// Destroys root `key`'s snapshot. Succeeds when there is none.
    func remove(_ key: RootKey) throws
    /// The roots' snapshots that exist, for gc.
    func rootSnapshots() throws -> [RootKey]

    /// Creates an empty master (and the store it needs); `loginchroot init`
    /// mounts masterLayout() and fills it.
    func createMaster() throws
    /// How to mount master writable for `loginchroot master run`.
    func masterLayout() throws -> RootLayout
    /// How to mount `generation` read-only, to look at it (`check`).
    func generationLayout(_ generation: Generation) throws -> RootLayout
    /// Snapshots master as a new immutable generation and makes it current.
    func publish() throws -> Generation
    /// Publishes, as the new current generation, the tree `fill` writes
    /// into the empty directory it is given (the fleet's commit), without
    /// master. `fill` learns whether it may hardlink files it must never
    /// see changed: nothing writes in that directory once published, and
    /// it is on the store's filesystem. nil, without calling `fill`, for a
    /// backend that makes generations from master only (dm-thin): its
    /// caller fills master and publishes.
    func publish(tree fill: (_ directory: String, _ mayHardlink: Bool) throws -> Void) throws -> Generation?
    func removeGeneration(_ generation: Generation) throws
    /// Settles what an interrupted publish or removal left (btrfs and
    /// overlay: the publish's temporaries; dm-thin: a pending pool
    /// transaction), under master.lock; returns what it finished.
    func finishInterruptedPublishes() throws -> [String]

    func usage() throws -> SpaceUsage

    /// Restricts the calling thread, which starts every process of the
    /// session, where the root's space limit could otherwise be escaped.
    /// Called once the root exists, before the caller enters it.
    func confineSession() throws

    /// After opening a root failed with `error`: waits, at most `seconds`,
    /// for space the store frees only some time after a remove, and returns
    /// whether a retry may now succeed. Most backends free space at once.
    func awaitReclaimedSpace(after error: Error, seconds: Int) -> Bool
}

extension SnapshotBackend {
    public func checkOnline() throws { try checkStore() }
    public var requiredPrograms: [RequiredProgram] { [] }
    public func createStore() throws {}
    public func publish(tree fill: (_ directory: String, _ mayHardlink: Bool) throws -> Void) throws -> Generation? { nil }

    /// The store's filesystem must be one the kernel has.
    public func checkKernel() throws { try SnapshotBackendKernel.require(filesystem: kind.rawValue) }

    public func confineSession() throws {}
    public func awaitReclaimedSpace(after error: Error, seconds: Int) -> Bool { false }
}

enum SnapshotBackendKernel {
    /// Throws unless the running kernel has filesystem `type`.
    static func require(filesystem type: String) throws {
        let filesystems = (try? Files.read("/proc/filesystems")) ?? ""
        guard filesystems.split(separator: "\n").contains(where: { $0.words.last == type }) else {
            throw SetupError("\(type) is not in /proc/filesystems", fix: "modprobe \(type)")
        }
    }
}

/// The directory layout every backend shares:
///   master/            the mutable golden root
///   stable/gen-N/      immutable generations (overlay with lower = erofs:
///                      stable/gen-N.erofs, image files)
///   current            the name of the current generation (renamed into place)
///   sessions/KEY/      per-root writable state
public struct StoreLayout {
    public let path: String
    /// What follows a generation's name in stable/ ("" for a directory).
    let generationSuffix: String
    public init(path: String, generationSuffix: String = "") {
        self.path = path
        self.generationSuffix = generationSuffix
    }

    public var master: String { joinPath(path, "master") }
    public var stable: String { joinPath(path, "stable") }
    public var sessionsDir: String { joinPath(path, "sessions") }
    public var currentFile: String { joinPath(path, "current") }
    public func generation(_ generation: Generation) -> String { joinPath(stable, generation.name + generationSuffix) }
    public func session(_ key: RootKey) -> String { joinPath(sessionsDir, key.value) }

    public func checkInitialized(backend: BackendKind) throws {
        guard Files.isDirectory(master), Files.isDirectory(stable), Files.isDirectory(sessionsDir) else {
            throw SetupError("store \(path) is not initialised for the \(backend.rawValue) backend",
                             fix: "run 'loginchroot init --from-dir DIR' (or --from-tar, --debootstrap)")
        }
        try Files.checkOwnedByRoot(path, kind: "store directory")
    }

    public func currentGeneration() throws -> Generation {
        let text: String
        do { text = try Files.read(currentFile) } catch {
            throw SetupError("no generation has been published in \(path)", fix: "run 'loginchroot publish'")
        }
        guard let generation = Generation(text.trimmed.filter { $0 != "\n" }), Files.exists(self.generation(generation)) else {
            throw SetupError("\(currentFile) names no existing generation", fix: "run 'loginchroot publish'")
        }
        return generation
    }

    public func generations() throws -> [Generation] {
        try Files.listDirectory(stable).compactMap { name in
            name.hasSuffix(generationSuffix) ? Generation(String(name.dropLast(generationSuffix.count))) : nil
        }.sorted()
    }

    public func nextGeneration() throws -> Generation {
        (try generations().last ?? Generation(number: 0)).next
    }

    public func setCurrent(_ generation: Generation) throws {
        try Files.writeAtomically(currentFile, generation.name + "\n", mode: 0o644)
    }

    /// master, bound writable, is the root of `loginchroot master run`.
    public var masterLayout: RootLayout { RootLayout(mounts: [.bind(source: master, target: "")], rootSubpath: "") }
    public func generationLayout(_ generation: Generation) -> RootLayout {
        RootLayout(mounts: [.bind(source: self.generation(generation), target: "")], rootSubpath: "")
    }

    /// Removes the `gen-N.tmp` entries interrupted publishes left, with the
    /// backend's own way of removing an entry of stable/.
    public func finishInterruptedPublishes(_ remove: (String) throws -> Void) throws -> [String] {
        let names = try Files.listDirectory(stable).filter { $0.hasSuffix(".tmp") }
        try names.forEach(remove)
        return names
    }

    public func sessionKeys() throws -> [RootKey] {
        try Files.listDirectory(sessionsDir).compactMap(RootKey.init)
    }

    public func createDirectories() throws {
        try Files.makeDirectories(path)
        _ = chmod(path, 0o700)
        for directory in [stable, sessionsDir] where !Files.isDirectory(directory) {
            try sys("mkdir", directory) { mkdir(directory, 0o700) }
        }
    }

    /// Refuses a new root while the filesystem at `path`, which roots write
    /// to, has less than `minFreePercent` free.
    public static func refuseNewRoot(below minFreePercent: Int, at path: String) throws {
        let space = try usage(at: path)
        guard space.totalBytes > 0 else { return }
        let free = Int(space.freeBytes * 100 / space.totalBytes)
        guard free >= minFreePercent else {
            throw SetupError("\(path) has \(free)% space free, below min_free \(minFreePercent)%",
                             fix: "end sessions, remove old generations ('loginchroot gc'), or give the store more space")
        }
    }

    public func usage() throws -> SpaceUsage { try StoreLayout.usage(at: path) }

    static func usage(at path: String) throws -> SpaceUsage {
        let space = try Files.space(at: path)
        return SpaceUsage(totalBytes: space.totalBytes, freeBytes: space.freeBytes)
    }
}

public enum Backends {
    public static func make(_ config: Config) -> SnapshotBackend {
        switch config.backend {
        case .btrfs: return BtrfsBackend(config: config)
        case .overlay: return OverlayBackend(config: config)
        case .dmThin: return DmThinBackend(config: config)
        }
    }
}
