// What a login machine's store holds of the fleet: the repository the
// pulls fetch into (STORE/fleet), the commit the last pull made `current`,
// and the commit master holds. A pull publishes its commit straight into
// the next generation (hardlinked to the repository's objects where the
// backend allows), so master falls behind; Images brings it up to the
// deployed commit before anything changes or publishes it here.
import LoginChrootCore
import LoginChrootPlatform

struct FleetDeployment {
    /// The commit and generation the last pull published: "COMMIT gen-N".
    static let deployedRecord = "loginchroot-deployed"
    /// The commit master was last filled with: "COMMIT".
    static let masterRecord = "loginchroot-master"
    let repository: OSTreeRepository

    init(storePath: String) {
        repository = OSTreeRepository(path: joinPath(storePath, "fleet"))
    }

    /// Whether `commit` is what the last pull published as `current`.
    func isDeployed(_ commit: String, as current: Generation) throws -> Bool {
        try read(Self.deployedRecord) == [commit, current.name]
    }

    /// The deployed commit, when master does not hold it (a pull published
    /// it without master); nil on a machine that never pulled.
    func commitMasterLacks() throws -> String? {
        guard let deployed = try read(Self.deployedRecord)?.first else { return nil }
        return try read(Self.masterRecord)?.first == deployed ? nil : deployed
    }

    /// Checks `commit` out into `directory`: with hardlinks to the
    /// repository's objects when `hardlinked` (a generation, which nothing
    /// writes once published), else as copies (master, which changes: the
    /// objects must not; reflinks where the filesystem has them).
    func checkout(_ commit: String, into directory: String, hardlinked: Bool) throws {
        try repository.run("checkout", ["--union"] + (hardlinked ? [] : ["--force-copy"]) + [commit, directory])
    }

    func recordDeployed(_ commit: String, as generation: Generation) throws {
        try write(Self.deployedRecord, "\(commit) \(generation.name)")
    }

    func recordMaster(_ commit: String) throws { try write(Self.masterRecord, commit) }

    /// Drops every object but the deployed commit's (the next pull's
    /// static delta starts from it; master's catch-up checks it out): the
    /// repository holds one commit, not a history. A generation hardlinked
    /// to a dropped object keeps its file.
    func pruneHistory() throws {
        try repository.run("prune", ["--refs-only", "--depth=0"])
    }

    private func read(_ record: String) throws -> [String]? {
        guard Files.isDirectory(repository.path) else { return nil }
        return try Descriptor.openDirectory(repository.path).readFile(record, path: joinPath(repository.path, record))?
            .split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
    }

    private func write(_ record: String, _ line: String) throws {
        try Descriptor.openDirectory(repository.path).replaceFile(record, with: line + "\n", mode: 0o644, durable: true,
                                                                 path: joinPath(repository.path, record))
    }
}
