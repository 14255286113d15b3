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
//
// Records and locks are reached through directory fds opened on the host,
// so a login saves its record from inside the root it just built.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public struct StateStore {
    public let directory: String
    private let top: Descriptor
    private let roots: Descriptor
    private let locks: Descriptor

    /// Opens the state directory, creating it and its subdirectories
    /// (root-only) when they are missing; an existing one must be root's.
    public init(directory: String) throws {
        self.directory = directory
        try Files.makeDirectories(parentDirectory(of: directory))
        try Files.ensurePrivateDirectory(directory)
        for sub in ["roots", "pins", "staging", "locks"] { try Files.ensurePrivateDirectory(joinPath(directory, sub)) }
        top = try Descriptor.openDirectory(directory)
        roots = try Descriptor.openDirectory(joinPath(directory, "roots"))
        locks = try Descriptor.openDirectory(joinPath(directory, "locks"))
    }

    public var rootsDir: String { joinPath(directory, "roots") }
    public var pinsDir: String { joinPath(directory, "pins") }
    public var stagingDir: String { joinPath(directory, "staging") }
    public func pinPath(_ key: RootKey) -> String { joinPath(pinsDir, key.value) }
    func recordPath(_ key: RootKey) -> String { joinPath(rootsDir, key.value) }

    /// Makes pins/ a private mount, so a pinned namespace never propagates
    /// into another namespace (only logins pin: gc, end and the image verbs
    /// leave no mount behind). Safe to repeat and to run concurrently: the
    /// bind is made once, under setup.lock.
    public func makePinsPrivate(timeoutSeconds: Int) throws {
        if !Mounts.isMountPoint(pinsDir) {
            let lock = try FileLock("setup.lock", in: top, path: joinPath(directory, "setup.lock"),
                                    timeoutSeconds: timeoutSeconds)
            defer { withExtendedLifetime(lock) {} }
            if !Mounts.isMountPoint(pinsDir) { try Mounts.bind(pinsDir, onto: pinsDir, recursive: false) }
        }
        try Mounts.setPropagation(pinsDir, MS_PRIVATE, recursive: false)
    }

    /// The reverse of makePinsPrivate() once no root is pinned (`stop`):
    /// unmounts pins/, so that nothing of loginchroot stays mounted.
    public func release() throws {
        guard Mounts.isMountPoint(pinsDir) else { return }
        let pinned = try pinnedKeys()
        guard pinned.isEmpty else {
            throw SetupError("\(pinsDir) still pins the namespaces of \(pinned.joined(separator: ", "))",
                             fix: "run 'loginchroot gc'")
        }
        try Mounts.unmount(pinsDir)
    }

    /// The lock around every change of `user`'s roots. nil timeout: wait
    /// as long as it takes; 0: not at all.
    public func lock(user: UserName, timeoutSeconds: Int?) throws -> FileLock {
        try FileLock(user.value, in: locks, path: joinPath(joinPath(directory, "locks"), user.value), timeoutSeconds: timeoutSeconds)
    }

    /// Held shared while a login snapshots a generation, exclusive while gc
    /// removes generations: gc never waits for it (a stopped login only
    /// postpones the collection).
    public func generationsLock(exclusive: Bool) throws -> FileLock {
        try FileLock("generations.lock", in: top, path: joinPath(directory, "generations.lock"),
                     timeoutSeconds: exclusive ? 0 : nil, shared: !exclusive)
    }

    /// The lock held by whatever writes master or the generations (master
    /// run, update, publish, and gc while it collects generations).
    /// With `wait: false` it fails at once when someone else holds it.
    public func masterLock(wait: Bool = true) throws -> FileLock {
        try FileLock("master.lock", in: top, path: joinPath(directory, "master.lock"), timeoutSeconds: wait ? nil : 0)
    }

    /// Held by `update --pull` across its fetch (which may wait on the
    /// network for minutes, so master.lock is not taken until the fetch is done).
    public func fleetLock() throws -> FileLock {
        try FileLock("fleet.lock", in: top, path: joinPath(directory, "fleet.lock"))
    }

    /// The record of root `key`; nil when there is none. A record that does
    /// not parse throws: it is quarantined (reported by gc and check, never
    /// acted on), and its root is nobody's to reuse.
    public func load(_ key: RootKey) throws -> RootRecord? {
        guard let text = try roots.readFile(key.value, path: recordPath(key)) else { return nil }
        guard let record = RootRecord.parse(text), record.key == key else {
            throw SetupError("the record \(recordPath(key)) of root \(key) does not parse; it is left as it is",
                             fix: "inspect it; end its processes, then remove it and run 'loginchroot gc'")
        }
        return record
    }

    public func exists(_ key: RootKey) -> Bool { roots.hasEntry(key.value) }

    /// What roots/ holds: every record that parses, and the names of the
    /// files that do not (or are not named after their key). gc and check
    /// report the latter; nothing acts on them or on their roots.
    public func scan() throws -> (records: [RootRecord], unreadable: [String]) {
        var records: [RootRecord] = []
        var unreadable: [String] = []
        for name in try roots.entries() where !name.hasPrefix(".") {
            guard let key = RootKey(name) else {
                unreadable.append(name)
                continue
            }
            do {
                if let record = try load(key) { records.append(record) }  // nil: removed meanwhile
            } catch {
                unreadable.append(name)
            }
        }
        return (records, unreadable)
    }

    /// Not synced to disk: a record describes processes, namespaces and
    /// mounts that a power loss ends anyway (state_dir belongs on /run), and
    /// gc at boot reclaims their storage from the store's own record.
    public func save(_ record: RootRecord) throws {
        try roots.replaceFile(record.key.value, with: record.serialized(), path: recordPath(record.key))
    }

    public func delete(_ key: RootKey) throws { try roots.removeFile(key.value, path: recordPath(key)) }

    public func pinnedKeys() throws -> [String] { try Files.listDirectory(pinsDir) }
}
