// The overlay backend's erofs tier ([overlay] lower = erofs): each
// generation is an erofs image file, built by mkfs.erofs at publish and
// never rewritten, and mounted once, read-only, under the state directory,
// where every root of that generation takes the mount as its lower layer:
// all of them read through one page cache. `start` mounts the kept
// generations after a boot; gc unmounts one no root uses, then deletes it.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

struct ErofsGenerations {
    static let suffix = ".erofs"
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

    /// Builds master into the image of `generation`: written as .tmp,
    /// synced, then renamed into place (an interrupted build leaves only a
    /// .tmp, which finishInterruptedPublishes removes).
    func build(_ generation: Generation) throws {
        let image = store.generation(generation)
        let temporary = image + ".tmp"
        let made = try Processes.runQuietly(["mkfs.erofs", "-zlz4hc", temporary, store.master])
        guard made.status == 0 else {
            try? Files.remove(temporary)
            throw SetupError("mkfs.erofs could not build \(temporary) from master (exit \(made.status)):\n\(made.output)",
                             fix: "see mkfs.erofs's words above; check free space in \(store.path)")
        }
        let file = try Descriptor.open(temporary, O_RDONLY | O_NOFOLLOW)
        try sys("fsync", temporary) { fsync(file.raw) }
        CrashPoint.reached("publish.snapshot-made")
        let (stable, name) = try Descriptor.openParent(of: image)
        try stable.renameIntoPlace(name + ".tmp", as: name, durable: true, path: image)
        CrashPoint.reached("publish.renamed")
    }

    /// Mounts `generation` unless it is mounted already (under master.lock:
    /// nothing else mounts generations).
    func mount(_ generation: Generation) throws {
        let target = mountPoint(generation)
        guard !Erofs.isMounted(at: target) else { return }
        try Files.makeDirectories(mounts, mode: 0o700)
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

    /// Mounts every generation the store keeps (start, after a boot).
    func mountAll() throws {
        for generation in try store.generations() { try mount(generation) }
    }

    /// Unmounts every mounted generation (stop); returns how many.
    func unmountAll() throws -> Int {
        let mounted: [Generation]
        do { mounted = try Files.listDirectory(mounts).compactMap(Generation.init) } catch let error as SystemError
            where error.errno == ENOENT { return 0 }  // nothing was ever mounted
        for generation in mounted { try unmount(generation) }
        return mounted.count
    }

    func remove(_ generation: Generation) throws {
        try unmount(generation)
        CrashPoint.reached("gc.generation-unmounted")
        try Files.remove(store.generation(generation))
    }
}
