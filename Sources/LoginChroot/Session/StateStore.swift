// The state directory (default /run/loginchroot):
//   locks/USER    flock around every change of that user's roots: one user's
//                 login, however slow or stopped, never waits on another's
//   generations.lock  shared by logins while they snapshot a generation,
//                 exclusive (never waited for) by gc while it removes some
//   setup.lock    around making pins/ a private mount (by the first login
//                 that pins a namespace after a boot or a `stop`)
//   master.lock   flock held by master run, update, publish and init, and by
//                 gc while it collects generations
//   roots/KEY     one RootRecord per session root
//   pins/KEY      the root's mount namespace, pinned by a bind mount
//   staging/      the mount point a new root is assembled on (inside the
//                 new namespace only; on the host it stays empty)
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public struct StateStore {
    public let directory: String
    public init(directory: String) { self.directory = directory }

    public var rootsDir: String { joinPath(directory, "roots") }
    public var pinsDir: String { joinPath(directory, "pins") }
    public var stagingDir: String { joinPath(directory, "staging") }
    public func pinPath(_ key: RootKey) -> String { joinPath(pinsDir, key.value) }
    func recordPath(_ key: RootKey) -> String { joinPath(rootsDir, key.value) }

    /// Creates the subdirectories (root-only) and, for a login that may pin
    /// a namespace, makes pins/ a private mount, so a pinned namespace never
    /// propagates into another namespace (gc, end and the image verbs pin
    /// nothing, and leave no mount behind). Safe to repeat and to run
    /// concurrently: the bind is made once, under setup.lock.
    public func prepare(timeoutSeconds: Int, forPins: Bool = false) throws {
        try createDirectory()
        for sub in [rootsDir, pinsDir, stagingDir, locksDir] { try Files.ensurePrivateDirectory(sub) }
        guard forPins else { return }
        if !Mounts.isMountPoint(pinsDir) {
            let lock = try FileLock(path: joinPath(directory, "setup.lock"), timeoutSeconds: timeoutSeconds)
            defer { withExtendedLifetime(lock) {} }
            if !Mounts.isMountPoint(pinsDir) { try Mounts.bind(pinsDir, onto: pinsDir, recursive: false) }
        }
        try Mounts.setPropagation(pinsDir, MS_PRIVATE, recursive: false)
    }

    /// The reverse of prepare() once no root is pinned (`stop`): unmounts
    /// pins/, so that nothing of loginchroot stays mounted.
    public func release() throws {
        guard Mounts.isMountPoint(pinsDir) else { return }
        guard pinnedKeys().isEmpty else {
            throw SetupError("\(pinsDir) still pins the namespaces of \(pinnedKeys().joined(separator: ", "))",
                             fix: "run 'loginchroot gc'")
        }
        try Mounts.unmount(pinsDir)
    }

    public var locksDir: String { joinPath(directory, "locks") }

    /// The lock around every change of `user`'s roots (prepare() made its
    /// directory). nil timeout: wait as long as it takes; 0: not at all.
    public func lock(user: UserName, timeoutSeconds: Int?) throws -> FileLock {
        try FileLock(path: joinPath(locksDir, user.value), timeoutSeconds: timeoutSeconds)
    }

    /// Held shared while a login snapshots a generation, exclusive while gc
    /// removes generations: gc never waits for it (a stopped login only
    /// postpones the collection).
    public func generationsLock(exclusive: Bool) throws -> FileLock {
        try FileLock(path: joinPath(directory, "generations.lock"), timeoutSeconds: exclusive ? 0 : nil,
                     shared: !exclusive)
    }

    /// The lock held by whatever writes master or the generations (master
    /// run, update, publish, and gc while it collects generations).
    /// With `wait: false` it fails at once when someone else holds it.
    public func masterLock(wait: Bool = true) throws -> FileLock {
        try createDirectory()
        return try FileLock(path: joinPath(directory, "master.lock"), timeoutSeconds: wait ? nil : 0)
    }

    private func createDirectory() throws {
        try Files.makeDirectories(parentDirectory(of: directory))
        try Files.ensurePrivateDirectory(directory)
    }

    /// The record of root `key`; nil when there is none. A record that does
    /// not parse throws: it is quarantined (reported by gc and check, never
    /// acted on), and its root is nobody's to reuse.
    public func load(_ key: RootKey) throws -> RootRecord? {
        let path = recordPath(key)
        let text: String
        do { text = try Files.read(path) } catch let error as SystemError where error.errno == ENOENT { return nil }
        guard let record = RootRecord.parse(text), record.key == key else {
            throw SetupError("the record \(path) of root \(key) does not parse; it is left as it is",
                             fix: "inspect it; end its processes, then remove it and run 'loginchroot gc'")
        }
        return record
    }

    public func exists(_ key: RootKey) -> Bool { Files.exists(recordPath(key)) }

    /// The keys of every record file named like a key.
    public func recordKeys() -> [RootKey] {
        ((try? Files.listDirectory(rootsDir)) ?? []).compactMap(RootKey.init)
    }

    /// Every record that parses (the others are in unreadableRecords()).
    public func loadAll() -> [RootRecord] {
        ((try? Files.listDirectory(rootsDir)) ?? []).compactMap { name in
            RootKey(name).flatMap { try? load($0) }
        }
    }

    /// Record files that do not parse, or are not named after their key
    /// (gc and check report them; nothing acts on them or on their roots).
    public func unreadableRecords() -> [String] {
        ((try? Files.listDirectory(rootsDir)) ?? []).filter { name in
            !name.hasPrefix(".") && (RootKey(name).flatMap { try? load($0) } == nil)
        }
    }

    /// Not synced to disk: a record describes processes, namespaces and
    /// mounts that a power loss ends anyway (state_dir belongs on /run), and
    /// gc at boot reclaims their storage from the store's own record.
    public func save(_ record: RootRecord) throws {
        try Files.writeAtomically(recordPath(record.key), record.serialized(), durable: false)
    }

    public func delete(_ key: RootKey) throws { try Files.remove(recordPath(key)) }

    public func pinnedKeys() -> [String] { (try? Files.listDirectory(pinsDir)) ?? [] }
}
