// overlay: each generation is a plain read-only directory tree used as the
// lower layer, or an erofs image mounted once (ErofsGenerations); a session's upper layer lives on a tmpfs that exists only in
// the session's namespace (so it vanishes with it), or under a configured
// host directory whose filesystem enforces project quotas, one project per
// root.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public final class OverlayBackend: SnapshotBackend {
    public let kind = BackendKind.overlay
    public let rootsOutliveTheirGeneration = false
    let store: StoreLayout
    let upper: OverlayUpper
    /// The erofs tier, when generations are images ([overlay] lower = erofs).
    let erofs: ErofsGenerations?
    let minFreePercent: Int
    let rootSize: UInt64

    public init(config: Config) {
        store = StoreLayout(path: config.storePath,
                            generationSuffix: config.overlayLower == .erofs ? ErofsGenerations.suffix : "")
        upper = config.overlayUpper
        erofs = config.overlayLower == .erofs ? ErofsGenerations(store: store, stateDir: config.stateDir) : nil
        minFreePercent = config.minFreePercent
        rootSize = config.rootSize
    }

    public var requiredPrograms: [RequiredProgram] { erofs == nil ? [] : [RequiredProgram("mkfs.erofs", in: "erofs-utils")] }

    /// overlay, and erofs for erofs generations.
    public func checkKernel() throws {
        for type in ["overlay"] + (erofs == nil ? [] : ["erofs"]) {
            try SnapshotBackendKernel.require(filesystem: type)
        }
    }

    /// A directory; with erofs generations, their mounts after a boot.
    public func bringOnline() throws {
        try Files.makeDirectories(store.path)
        if let erofs, Files.isDirectory(store.stable) { try erofs.mountAll() }
    }

    public func takeOffline() throws -> String? {
        guard let erofs else { return nil }
        let count = try erofs.unmountAll()
        return count == 0 ? nil : "\(count) erofs generation(s) unmounted"
    }

    public func checkStore() throws {
        try store.checkInitialized(backend: kind)
        if case .directory(let path) = upper {
            guard Files.isDirectory(path) else {
                throw SetupError("overlay upper directory \(path) does not exist", fix: "mkdir -m 700 \(path)")
            }
            try Files.checkOwnedByRoot(path, kind: "overlay upper directory")
            // Without a limit per root, one user who fills it fills it for everyone.
            guard ProjectQuota.isEnforced(on: try Descriptor.openDirectory(path)) else {
                throw SetupError("the filesystem of overlay upper directory \(path) does not enforce project quotas, which limit each root to root_size",
                                 fix: "with its ext4 filesystem unmounted, run 'tune2fs -O quota,project DEVICE', then mount it with '-o prjquota' (xfs: mount it with '-o prjquota'); or set 'upper = tmpfs'")
            }
        }
    }

    /// Project ids this backend gives roots: from 2^20 up, clear of the
    /// small ids an admin's own projects use (the filesystem should be the
    /// upper's alone all the same).
    static let projectIDs: ClosedRange<UInt32> = (1 << 20)...(UInt32.max >> 1)

    /// The first project id from the root's own place in the range that
    /// holds nothing now. (Two users whose keys hash alike and who log in
    /// at the same moment could both take one id; their roots would then
    /// share a limit, never exceed it.)
    private func unusedProject(for key: RootKey, on base: Descriptor, path: String) throws -> UInt32 {
        let span = UInt32(OverlayBackend.projectIDs.count)
        let start = fnv1a(key.value) % span
        for step in UInt32(0)..<64 {
            let id = OverlayBackend.projectIDs.lowerBound + (start &+ step) % span
            if try !ProjectQuota.isInUse(id, on: base, path: path) { return id }
        }
        throw SetupError("64 project ids in a row from \(OverlayBackend.projectIDs.lowerBound + start) are in use on \(path)",
                         fix: "give the overlay upper a filesystem of its own")
    }

    /// The files of a root may not leave its project.
    public func confineSession() throws {
        if case .directory = upper { try RefusedIoctls.projectChanges.refuseOnThisThread() }
    }

    public func currentGeneration() throws -> Generation { try store.currentGeneration() }
    public func generations() throws -> [Generation] { try store.generations() }

    public func prepare(_ key: RootKey, from generation: Generation) throws -> RootLayout {
        let lower = try erofs?.lower(generation) ?? store.generation(generation)
        switch upper {
        case .tmpfs(let size):
            return RootLayout(mounts: [
                .tmpfs(target: "", sizeBytes: size),
                .directory("upper"), .directory("work"), .directory("root"),
                .overlay(lower: lower, upper: "upper", work: "work", target: "root"),
            ], rootSubpath: "root")
        case .directory(let base):
            try StoreLayout.refuseNewRoot(below: minFreePercent, at: base)
            let directory = joinPath(base, OverlayBackend.upperPrefix + key.value)
            try sys("mkdir", directory) { mkdir(directory, 0o700) }
            // Its own project, limited, before anything is made in it: upper
            // and work inherit it, and so does everything the root writes.
            let top = try Descriptor.openDirectory(directory)
            let project = try unusedProject(for: key, on: top, path: base)
            try ProjectQuota.assign(project, to: top, path: directory)
            try ProjectQuota.limit(project, toBytes: rootSize, on: top, path: directory)
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
        let parent = try Descriptor.openDirectory(base)
        let name = OverlayBackend.upperPrefix + key.value
        let directory = joinPath(base, name)
        guard Files.isDirectory(directory) else { return }
        let project = try ProjectQuota.project(of: try Descriptor.openDirectory(directory), path: directory)
        try Files.removeTree(parent: parent, name: name)
        // Its limit goes with it (a crash before this leaves a limit on an
        // empty project, which the next root given that id overwrites).
        if OverlayBackend.projectIDs.contains(project) {
            try ProjectQuota.limit(project, toBytes: 0, on: parent, path: base)
        }
    }

    /// Upper directories carry a prefix, so gc never mistakes anything else
    /// in the configured directory for one of ours.
    static let upperPrefix = "loginchroot-"

    public func rootSnapshots() throws -> [RootKey] {
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
    public func generationLayout(_ generation: Generation) throws -> RootLayout {
        guard let erofs else { return store.generationLayout(generation) }
        return RootLayout(mounts: [.bind(source: try erofs.lower(generation), target: "")], rootSubpath: "")
    }

    public func publish() throws -> Generation {
        try publishNext(erofsSource: store.master) { temporary in
            let copied = try Processes.runQuietly(["cp", "-a", "-T", "--reflink=auto", store.master, temporary])
            guard copied.status == 0 else {
                throw SetupError("copying master to \(temporary) failed (cp exit \(copied.status)):\n\(copied.output)",
                                 fix: "check free space in \(store.path)")
            }
        }
    }

    /// A generation is never written once published (a root's changes go
    /// to its upper layer), and the erofs tier's tree is only mkfs.erofs's
    /// input: both may be hardlinked.
    public func publish(tree fill: (_ directory: String, _ mayHardlink: Bool) throws -> Void) throws -> Generation? {
        try publishNext(erofsSource: nil) { try fill($0, true) }
    }

    /// Makes the next generation and then makes it current: the directory
    /// `write` writes (as gen-N.tmp, then renamed); with erofs generations,
    /// the image built from `erofsSource`, or, when that is nil, from the
    /// tree `write` writes for it (gen-N.tree.tmp, removed after). The
    /// caller holds master.lock; a failure removes what it left.
    private func publishNext(erofsSource: String?, write: (_ directory: String) throws -> Void) throws -> Generation {
        let stable = try Descriptor.openDirectory(store.stable)
        _ = try finishInterruptedPublishes()  // what interrupted publishes left
        let generation = try store.nextGeneration()
        do {
            if let erofs {
                if let erofsSource {
                    try erofs.build(generation, from: erofsSource)
                } else {
                    let tree = generation.name + ".tree.tmp"
                    try write(joinPath(store.stable, tree))
                    try erofs.build(generation, from: joinPath(store.stable, tree))
                    try Files.removeTree(parent: stable, name: tree)
                }
                try erofs.mount(generation)
            } else {
                let temporary = store.generation(generation) + ".tmp"
                try write(temporary)
                CrashPoint.reached("publish.snapshot-made")
                try sys("rename", temporary) { rename(temporary, store.generation(generation)) }
                CrashPoint.reached("publish.renamed")
            }
        } catch {
            _ = try? finishInterruptedPublishes()
            throw error
        }
        try store.setCurrent(generation)
        return generation
    }

    public func removeGeneration(_ generation: Generation) throws {
        if let erofs { return try erofs.remove(generation) }
        try Files.removeTree(parent: try Descriptor.openDirectory(store.stable), name: generation.name)
    }

    public func finishInterruptedPublishes() throws -> [String] {
        let stable = try Descriptor.openDirectory(store.stable)
        return try store.finishInterruptedPublishes { try Files.removeTree(parent: stable, name: $0) }
            + (erofs?.removeOrphanDigests() ?? [])
    }

    public func usage() throws -> SpaceUsage { try store.usage() }
}
