// overlay: each generation is a plain read-only directory tree used as the
// lower layer; a session's upper layer lives on a tmpfs that exists only in
// the session's namespace (so it vanishes with it), or under a configured
// host directory.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public final class OverlayBackend: SnapshotBackend {
    public let kind = BackendKind.overlay
    public let sessionsOutliveTheirGeneration = false
    let store: StoreLayout
    let upper: OverlayUpper
    let minFreePercent: Int

    public init(config: Config) {
        store = StoreLayout(path: config.storePath)
        upper = config.overlayUpper
        minFreePercent = config.minFreePercent
    }

    public func checkStore() throws {
        try store.checkInitialized(backend: kind)
        if case .directory(let path) = upper {
            guard Files.isDirectory(path) else {
                throw SetupError("overlay upper directory \(path) does not exist", fix: "mkdir -m 700 \(path)")
            }
            try Files.checkOwnedByRoot(path, kind: "overlay upper directory")
        }
    }

    public func currentGeneration() throws -> Generation { try store.currentGeneration() }
    public func generations() throws -> [Generation] { try store.generations() }

    public func prepare(_ key: RootKey, from generation: Generation) throws -> RootLayout {
        let lower = store.generation(generation)
        switch upper {
        case .tmpfs(let size):
            return RootLayout(mounts: [
                .tmpfs(target: "", sizeBytes: size),
                .directory("upper"), .directory("work"), .directory("root"),
                .overlay(lower: lower, upper: "upper", work: "work", target: "root"),
            ], rootSubpath: "root")
        case .directory(let base):
            // (A tmpfs upper has its own size limit, tmpfs_size.)
            try StoreLayout.refuseNewRoot(below: minFreePercent, at: base)
            let directory = joinPath(base, OverlayBackend.upperPrefix + key.value)
            try sys("mkdir", directory) { mkdir(directory, 0o700) }
            for sub in ["upper", "work"] {
                let path = joinPath(directory, sub)
                try sys("mkdir", path) { mkdir(path, 0o755) }
            }
            return RootLayout(mounts: [
                .overlay(lower: lower, upper: joinPath(directory, "upper"), work: joinPath(directory, "work"), target: ""),
            ], rootSubpath: "")
        }
    }

    public func remove(_ key: RootKey) throws {
        // A tmpfs upper died with the namespace; a directory upper is deleted
        // without following symlinks or crossing mounts.
        guard case .directory(let base) = upper, Files.isDirectory(base) else { return }
        try Files.removeTree(parent: try Descriptor.openDirectory(base), name: OverlayBackend.upperPrefix + key.value)
    }

    /// Upper directories carry a prefix, so gc never mistakes anything else
    /// in the configured directory for one of ours.
    static let upperPrefix = "loginchroot-"

    public func sessions() throws -> [RootKey] {
        guard case .directory(let base) = upper, Files.isDirectory(base) else { return [] }
        return try Files.listDirectory(base).compactMap { name in
            name.hasPrefix(OverlayBackend.upperPrefix) ? RootKey(String(name.dropFirst(OverlayBackend.upperPrefix.count))) : nil
        }
    }

    public func createMaster() throws {
        try store.createDirectories()
        if !Files.isDirectory(store.master) {
            try sys("mkdir", store.master) { mkdir(store.master, 0o755) }
        }
    }

    public func masterLayout() throws -> RootLayout { store.masterLayout }

    public func publish() throws -> Generation {
        _ = try removeTemporaries()  // what interrupted publishes left (the caller holds master.lock)
        let generation = try store.nextGeneration()
        let temporary = store.generation(generation) + ".tmp"
        let status = try Processes.run(["cp", "-a", "-T", "--reflink=auto", store.master, temporary])
        guard status == 0 else {
            _ = try? removeTemporaries()
            throw SetupError("copying master to \(temporary) failed (cp exit \(status))", fix: "check free space in \(store.path)")
        }
        CrashPoint.reached("publish.snapshot-made")
        try sys("rename", temporary) { rename(temporary, store.generation(generation)) }
        CrashPoint.reached("publish.renamed")
        try store.setCurrent(generation)
        return generation
    }

    public func removeGeneration(_ generation: Generation) throws {
        try Files.removeTree(parent: try Descriptor.openDirectory(store.stable), name: generation.name)
    }

    public func removeTemporaries() throws -> [String] {
        let stable = try Descriptor.openDirectory(store.stable)
        return try store.removeTemporaries { try Files.removeTree(parent: stable, name: $0) }
    }

    public func usage() throws -> SpaceUsage { try store.usage() }
}
