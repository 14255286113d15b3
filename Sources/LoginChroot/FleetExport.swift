// The build host's half of fleet delivery: a generation it publishes is
// committed to an OSTree archive repository, which any web server can serve
// to the login machines. Each commit carries the generation's number and a
// GPG signature; a static delta leads to it from the previous commit; the
// branch keeps [fleet] keep_commits commits; the summary is signed again.
// All of it through /usr/bin/ostree (the engine, not a copy of it), from the
// CLI only: the PAM module never loads libostree.
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public struct FleetExport {
    public static let programs = [RequiredProgram("ostree", in: "ostree"), RequiredProgram("gpg", in: "gnupg"),
                                  RequiredProgram("find", in: "findutils")]
    /// The commit metadata key that carries the generation's number.
    public static let generationKey = "loginchroot.generation"
    let config: Config
    let repository: String

    /// Checks what an export needs before anything is published: the
    /// programs, an absolute repository path, a signing key.
    public init(config: Config, configPath: String, repository: String) throws {
        guard repository.hasPrefix("/") else {
            throw SetupError("the export repository '\(repository)' is not an absolute path",
                             fix: "give its absolute path, like /srv/loginchroot/repo")
        }
        guard !config.fleetSigningKey.isEmpty else {
            throw SetupError("[fleet] signing_key is not set in \(configPath): exports are signed",
                             fix: "make a key with 'mkdir -m 700 -p \(config.fleetGPGHome) && gpg --homedir \(config.fleetGPGHome) "
                                  + "--batch --passphrase '' --quick-gen-key \"loginchroot fleet\" ed25519 sign never', "
                                  + "then set signing_key to the fingerprint it prints")
        }
        try RequiredPrograms.require(Self.programs)
        self.config = config
        self.repository = repository
    }

    /// Commits `generation` to the branch (read from a read-only mount in a
    /// namespace of this thread's own), then makes the static delta from
    /// the previous commit, prunes the branch and signs the summary.
    /// Returns the commit's checksum. What is in /dev stays out of the
    /// commit (a root gets the host's /dev; the directory stays, as the
    /// mount point); a device node, FIFO or socket anywhere else stops the
    /// export, named (ostree commits none, and one outside /dev is unusual
    /// enough that the admin decides).
    public func export(_ generation: Generation, of backend: SnapshotBackend, state: StateStore,
                       log: @escaping (String) -> Void) throws -> String {
        if !Files.exists(joinPath(repository, "config")) {
            try Files.makeDirectories(repository)
            try ostree("init", ["--mode=archive"])
        }
        let parent = try ostree("refs", []).contains(config.fleetRef) ? try ostree("rev-parse", [config.fleetRef]).last : nil
        let signing = ["--gpg-sign=" + config.fleetSigningKey, "--gpg-homedir=" + config.fleetGPGHome]
        try Roots.returningToThisNamespace {
            let tree = try ImageLabels.mountPrivately(try backend.generationLayout(generation), state: state, log: log)
            // An empty tmpfs over the image's /dev, in this namespace only (a
            // symlink there is not followed: it is committed as it is).
            if let dev = try? Descriptor.openDirectory(tree).openInside("/dev", O_RDONLY | O_DIRECTORY, noSymlinks: true) {
                try Mounts.mount(source: "tmpfs", target: dev.procPath, type: "tmpfs",
                                 flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), data: "mode=0755,size=64k")
            }
            let special = try Processes.runQuietly(["find", tree, "-xdev", "(", "-type", "b", "-o", "-type", "c", "-o", "-type", "p",
                                                    "-o", "-type", "s", ")", "-printf", "/%P\\n"])
            guard special.status == 0, special.output.isEmpty else {
                throw SetupError("\(generation) has device nodes, FIFOs or sockets outside /dev, which a commit cannot carry "
                                 + "(or find failed, exit \(special.status)):\n\(special.output)",
                                 fix: "remove them from master ('loginchroot master run -- rm PATH'), then publish --export again")
            }
            try ostree("commit", ["--branch=" + config.fleetRef, "--tree=dir=" + tree,
                                  "--subject=loginchroot \(generation)",
                                  "--add-metadata-string=\(Self.generationKey)=\(generation.number)"] + signing)
        }
        guard let commit = try ostree("rev-parse", [config.fleetRef]).last else {
            throw SetupError("ostree rev-parse printed no commit for \(config.fleetRef) in \(repository)", fix: "run 'ostree refs --repo=\(repository)'")
        }
        CrashPoint.reached("export.committed")
        if let parent { try ostree("static-delta", ["generate", "--from=" + parent, "--to=" + commit]) }
        try ostree("prune", ["--refs-only", "--depth=\(config.fleetKeepCommits - 1)"])
        try ostree("summary", ["--update"] + signing)
        return commit
    }

    /// Runs `ostree COMMAND --repo=REPOSITORY ARGUMENTS`; returns the lines
    /// it printed (its last 4 KiB), trimmed.
    @discardableResult
    private func ostree(_ command: String, _ arguments: [String]) throws -> [String] {
        let outcome = try Processes.runQuietly(["ostree", command, "--repo=" + repository] + arguments)
        guard outcome.status == 0 else {
            throw SetupError("ostree \(command) in \(repository) failed (exit \(outcome.status)):\n\(outcome.output)",
                             fix: "see ostree's words above")
        }
        return outcome.output.split(separator: "\n").map { $0.trimmed }
    }
}
