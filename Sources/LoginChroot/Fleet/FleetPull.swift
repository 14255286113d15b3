// The login machines' half of fleet delivery: `loginchroot update --pull`
// fetches the newest commit of the build host's branch into a repository in
// the store (STORE/fleet), every commit and the summary verified against
// the build host's public key; Images then publishes it (FleetDeployment).
// A pull that fails or is cut changes nothing but the repository's own
// objects, from which ostree resumes on the next run.
import LoginChrootCore
import LoginChrootPlatform

public struct FleetPull {
    public static let programs = [RequiredProgram("ostree", in: "ostree"), RequiredProgram("gpg", in: "gnupg")]
    /// The remote's name in the store's repository.
    static let remote = "fleet"

    /// How an `update --pull` ended.
    public enum Outcome: Equatable {
        /// The commit is the current generation already: nothing published.
        case upToDate(commit: String, generation: Generation)
        case published(commit: String, generation: Generation)
    }

    let config: Config
    let deployment: FleetDeployment
    var repository: OSTreeRepository { deployment.repository }

    /// Checks what a pull needs: the programs, the url, the public key.
    public init(config: Config, configPath: String) throws {
        guard !config.fleetURL.isEmpty else {
            throw SetupError("[fleet] url is not set in \(configPath): there is nothing to pull from",
                             fix: "set url to the build host's repository, like https://build.example.org/loginchroot/repo")
        }
        guard Files.exists(config.fleetKeyring) else {
            throw SetupError("the build host's public key \(config.fleetKeyring) ([fleet] keyring) does not exist",
                             fix: "copy it there from the build host ('gpg --homedir /etc/loginchroot/gpg --armor --export FINGERPRINT')")
        }
        // Whoever may write it chooses what this machine trusts.
        try Files.checkOwnedByRoot(config.fleetKeyring, kind: "fleet keyring")
        try RequiredPrograms.require(Self.programs)
        self.config = config
        deployment = FleetDeployment(storePath: config.storePath)
    }

    /// Fetches the branch's newest commit: the remote is made on first use
    /// (or again when [fleet] url changed), with signatures required on
    /// commits and on the summary and the keyring imported; then `ostree
    /// pull`, tried [fleet] pull_attempts times with a growing pause, each
    /// resuming from what the last fetched; a commit older than the one the
    /// repository has is refused. Returns the commit.
    func fetch(log: (String) -> Void) throws -> String {
        try repository.createIfMissing(mode: "bare")
        try configureRemote()
        var pause = 1
        for attempt in 1...config.fleetPullAttempts {
            // --timestamp-check: an older commit, however well signed (a
            // replayed summary), is refused.
            let outcome = try repository.attempt("pull", ["--timestamp-check", Self.remote, config.fleetRef])
            if outcome.status == 0 { break }
            guard attempt < config.fleetPullAttempts else {
                throw SetupError("pulling \(config.fleetRef) from \(config.fleetURL) failed \(attempt) times; the last said:\n"
                                 + outcome.output,
                                 fix: "see ostree's words above; nothing changed here, and the next 'loginchroot update --pull' "
                                      + "resumes what was fetched")
            }
            log("pull attempt \(attempt) of \(config.fleetPullAttempts) failed; again in \(pause) s: \(outcome.output.trimmed)")
            Processes.sleep(milliseconds: pause * 1000)
            pause = min(pause * 2, 30)
        }
        CrashPoint.reached("pull.fetched")
        guard let commit = try repository.head(of: Self.remote + ":" + config.fleetRef) else {
            throw SetupError("the pull left no \(Self.remote):\(config.fleetRef) in \(repository.path)",
                             fix: "run 'ostree refs --repo=\(repository.path)'")
        }
        return commit
    }

    private func configureRemote() throws {
        let url = try repository.attempt("remote", ["show-url", Self.remote])
        if url.status == 0 && url.output.trimmed.split(separator: "\n").last.map({ $0.trimmed }) == config.fleetURL { return }
        if url.status == 0 { try repository.run("remote", ["delete", Self.remote]) }
        try repository.run("remote", ["add", "--set=gpg-verify=true", "--set=gpg-verify-summary=true",
                                      "--gpg-import=" + config.fleetKeyring, Self.remote, config.fleetURL])
    }
}
