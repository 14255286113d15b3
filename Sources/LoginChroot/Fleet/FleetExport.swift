// The build host's half of fleet delivery: a generation it publishes is
// committed to an OSTree archive repository, which any web server can serve
// to the login machines. Each commit carries the generation's number and a
// GPG signature; a static delta leads to it from the previous commit; the
// branch keeps [fleet] keep_commits commits; the summary is signed again.
// All of it through /usr/bin/ostree (OSTreeRepository).
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public struct FleetExport {
    public static let programs = [RequiredProgram("ostree", in: "ostree"), RequiredProgram("gpg", in: "gnupg"),
                                  RequiredProgram("find", in: "findutils")]
    /// The commit metadata key that carries the generation's number.
    public static let generationKey = "loginchroot.generation"
    let config: Config
    let repository: OSTreeRepository

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
        let key = try Processes.runQuietly(["gpg", "--homedir", config.fleetGPGHome, "--batch", "--list-secret-keys",
                                            config.fleetSigningKey])
        guard key.status == 0 else {
            throw SetupError("[fleet] signing_key \(config.fleetSigningKey) is not a secret key in \(config.fleetGPGHome):\n"
                             + key.output, fix: "set signing_key to a fingerprint 'gpg --homedir \(config.fleetGPGHome) "
                                                + "--list-secret-keys' prints")
        }
        self.config = config
        self.repository = OSTreeRepository(path: repository)
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
        try repository.createIfMissing(mode: "archive")
        let parent = try repository.head(of: config.fleetRef)
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
            try repository.run("commit", ["--branch=" + config.fleetRef, "--tree=dir=" + tree,
                                  "--subject=loginchroot \(generation)",
                                  "--add-metadata-string=\(Self.generationKey)=\(generation.number)"])
        }
        guard let commit = try repository.head(of: config.fleetRef) else {
            throw SetupError("the commit just made is not on \(config.fleetRef) in \(repository.path)",
                             fix: "run 'ostree refs --repo=\(repository.path)'")
        }
        // Signed from here, not from the namespace above: gpg may start
        // gpg-agent, a daemon, which would keep that namespace and the
        // generation's mount in it alive.
        try repository.run("gpg-sign", [commit, config.fleetSigningKey, "--gpg-homedir=" + config.fleetGPGHome])
        CrashPoint.reached("export.committed")
        if let parent { try repository.run("static-delta", ["generate", "--from=" + parent, "--to=" + commit]) }
        try repository.run("prune", ["--refs-only", "--depth=\(config.fleetKeepCommits - 1)"])
        try repository.run("summary", ["--update"] + signing)
        return commit
    }
}
