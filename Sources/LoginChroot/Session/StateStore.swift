// The state directory (default /run/loginchroot):
//   lock          flock taken around every change of a root
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

    /// Creates the subdirectories (root-only) and makes pins/ a private
    /// mount, so a pinned namespace never propagates into another namespace.
    /// Called with the state or master lock held (taking it created the
    /// directory); safe to repeat.
    public func prepare() throws {
        for sub in [rootsDir, pinsDir, stagingDir] { try Files.ensurePrivateDirectory(sub) }
        if !Mounts.isMountPoint(pinsDir) {
            try Mounts.bind(pinsDir, onto: pinsDir, recursive: false)
        }
        try Mounts.setPropagation(pinsDir, MS_PRIVATE, recursive: false)
    }

    /// The lock around every change of a root (created with the directory).
    /// nil timeout: wait as long as it takes.
    public func lock(timeoutSeconds: Int? = nil) throws -> FileLock {
        try createDirectory()
        return try FileLock(path: joinPath(directory, "lock"), timeoutSeconds: timeoutSeconds)
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

    public func load(_ key: RootKey) -> RootRecord? {
        guard let text = try? Files.read(recordPath(key)), let record = RootRecord.parse(text),
              record.key == key else { return nil }
        return record
    }

    public func loadAll() -> [RootRecord] {
        ((try? Files.listDirectory(rootsDir)) ?? []).compactMap { name in
            RootKey(name).flatMap(load)
        }
    }

    /// Record files that do not parse, or are not named after their key
    /// (gc reports them; it never acts on them).
    public func unreadableRecords() -> [String] {
        ((try? Files.listDirectory(rootsDir)) ?? []).filter { name in
            !name.hasPrefix(".") && (RootKey(name).flatMap(load) == nil)
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
