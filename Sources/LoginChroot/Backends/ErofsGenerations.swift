// The overlay backend's erofs tier ([overlay] lower = erofs): each
// generation is an erofs image file, built by mkfs.erofs at publish and
// never rewritten, and mounted once, read-only, under the state directory,
// where every root of that generation takes the mount as its lower layer:
// all of them read through one page cache. `start` mounts the kept
// generations after a boot; gc unmounts one no root uses, then deletes it.
// Where the store's filesystem has fs-verity, each image is sealed by it
// at publish and its digest recorded beside it (gen-N.erofs.verity); an
// image whose digest differs, or that lost its seal, is never mounted.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

struct ErofsGenerations {
    static let suffix = ".erofs"
    static let digestSuffix = ".verity"
    let store: StoreLayout
    /// Where the generations are mounted: <state_dir>/generations/gen-N.
    let mounts: String

    init(store: StoreLayout, stateDir: String) {
        self.store = store
        mounts = joinPath(stateDir, "generations")
    }

    func mountPoint(_ generation: Generation) -> String { joinPath(mounts, generation.name) }

    /// The mounted generation a root takes as its lower layer.
    func lower(_ generation: Generation) throws -> String {
        let path = mountPoint(generation)
        guard Erofs.isMounted(at: path) else {
            throw SetupError("generation \(generation) is not mounted at \(path)", fix: "run 'loginchroot start'")
        }
        return path
    }

    /// Builds `source` (master, or a checked-out tree) into the image of
    /// `generation`: written as .tmp,
    /// synced, sealed with fs-verity where the filesystem has it (its digest
    /// recorded first), then renamed into place. An interrupted build leaves
    /// a .tmp and perhaps a digest without its image, which
    /// finishInterruptedPublishes removes.
    func build(_ generation: Generation, from source: String) throws {
        let image = store.generation(generation)
        let temporary = image + ".tmp"
        let made = try Processes.runQuietly(["mkfs.erofs", "-zlz4hc", temporary, source])
        guard made.status == 0 else {
            try? Files.remove(temporary)
            throw SetupError("mkfs.erofs could not build \(temporary) from \(source) (exit \(made.status)):\n\(made.output)",
                             fix: "see mkfs.erofs's words above; check free space in \(store.path)")
        }
        let file = try Descriptor.open(temporary, O_RDONLY | O_NOFOLLOW)
        try sys("fsync", temporary) { fsync(file.raw) }
        let (stable, name) = try Descriptor.openParent(of: image)
        if try Verity.enable(file, path: temporary), case .sealed(let digest) = try Verity.seal(of: file, path: temporary) {
            try stable.replaceFile(name + Self.digestSuffix, with: digest + "\n", durable: true, path: image + Self.digestSuffix)
            CrashPoint.reached("erofs.digest-recorded")
        }
        CrashPoint.reached("publish.snapshot-made")
        try stable.renameIntoPlace(name + ".tmp", as: name, durable: true, path: image)
        CrashPoint.reached("publish.renamed")
    }

    /// Refuses an image that is not the one publish built: its fs-verity
    /// digest differs from the recorded one, or one of the two is missing.
    /// Only where the store's filesystem has no fs-verity at all is an
    /// image without a seal and a record taken as it is.
    func checkSeal(_ generation: Generation) throws {
        let image = store.generation(generation)
        let (stable, name) = try Descriptor.openParent(of: image)
        let recorded = try stable.readFile(name + Self.digestSuffix, path: image + Self.digestSuffix)?
            .split(separator: "\n").first?.trimmed
        let found: String
        switch (try Verity.seal(of: try stable.openFile(name, O_RDONLY, path: image), path: image), recorded) {
        case (.sealed(let digest), let recorded?) where digest == recorded: return
        case (.unsupported, nil): return
        case (.sealed(let digest), _): found = "has fs-verity digest \(digest)"
        case (.unsealed, _): found = "has no fs-verity seal on a filesystem that has fs-verity"
        case (.unsupported, _): found = "is on a filesystem without fs-verity"
        }
        throw SetupError("\(image) \(found), but publish recorded \(recorded ?? "no digest"): it is not the image publish "
                         + "built, and is not mounted",
                         fix: "run 'loginchroot publish' for a new generation from master; gc deletes this one once no root uses it")
    }

    /// Mounts `generation` unless it is mounted already (under master.lock:
    /// nothing else mounts generations).
    func mount(_ generation: Generation) throws {
        let target = mountPoint(generation)
        guard !Erofs.isMounted(at: target) else { return }
        try Files.makeDirectories(mounts, mode: 0o700)
        try checkSeal(generation)
        try Files.makeDirectory(target, mode: 0o755)
        try Erofs.mount(store.generation(generation), at: target)
        CrashPoint.reached("erofs.mounted")
    }

    /// Unmounts `generation` (a root's namespace keeps its own reference to
    /// the mount; only the host's goes) and removes the mount point.
    func unmount(_ generation: Generation) throws {
        let target = mountPoint(generation)
        while Erofs.isMounted(at: target) { try Mounts.unmount(target) }
        try sys("rmdir", target, unless: ENOENT) { rmdir(target) }
    }

    /// Mounts every generation the store keeps (start, after a boot); one
    /// that cannot be mounted does not keep the others from it.
    func mountAll() throws {
        var failures: [String] = []
        for generation in try store.generations() {
            do { try mount(generation) } catch { failures.append("\(generation): \(error)") }
        }
        guard failures.isEmpty else {
            throw SetupError("erofs generations not mounted:\n" + failures.joined(separator: "\n"),
                             fix: "see each generation's fix above; the others are mounted")
        }
    }

    /// Unmounts every mounted generation (stop); returns how many.
    func unmountAll() throws -> Int {
        let mounted: [Generation]
        do { mounted = try Files.listDirectory(mounts).compactMap(Generation.init) } catch let error as SystemError
            where error.errno == ENOENT { return 0 }  // nothing was ever mounted
        for generation in mounted { try unmount(generation) }
        return mounted.count
    }

    /// The image, then its digest (a digest without its image is what
    /// removeOrphanDigests finds).
    func remove(_ generation: Generation) throws {
        try unmount(generation)
        CrashPoint.reached("gc.generation-unmounted")
        try Files.remove(store.generation(generation))
        try Files.remove(store.generation(generation) + Self.digestSuffix)
    }

    /// Removes the digests whose image an interrupted publish never renamed
    /// into place, or an interrupted gc deleted already; returns their names.
    func removeOrphanDigests() throws -> [String] {
        let stable = try Descriptor.openDirectory(store.stable)
        let names = try stable.entries()
        let orphans = names.filter { $0.hasSuffix(Self.suffix + Self.digestSuffix) && !names.contains(String($0.dropLast(Self.digestSuffix.count))) }
        for name in orphans { try stable.removeFile(name, path: joinPath(store.stable, name)) }
        return orphans
    }
}
