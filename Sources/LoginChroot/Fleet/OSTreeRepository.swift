// An OSTree repository, driven through /usr/bin/ostree: the engine, not a
// copy of it, and only from the CLI (the PAM module never loads libostree).
import LoginChrootCore
import LoginChrootPlatform

struct OSTreeRepository {
    let path: String

    /// Makes the repository (`ostree init --mode=MODE`) unless it exists.
    func createIfMissing(mode: String) throws {
        guard !Files.exists(joinPath(path, "config")) else { return }
        try Files.makeDirectories(path)
        try run("init", ["--mode=" + mode])
    }

    /// The commit `ref` ("BRANCH", or "REMOTE:BRANCH") points to; nil when
    /// the repository has no such ref.
    func head(of ref: String) throws -> String? {
        guard try run("refs", []).contains(ref) else { return nil }
        return try run("rev-parse", [ref]).last
    }

    /// Runs `ostree COMMAND --repo=PATH ARGUMENTS`; returns the lines it
    /// printed (its last 4 KiB), trimmed. A failure throws with ostree's words.
    @discardableResult
    func run(_ command: String, _ arguments: [String]) throws -> [String] {
        let outcome = try attempt(command, arguments)
        guard outcome.status == 0 else {
            throw SetupError("ostree \(command) in \(path) failed (exit \(outcome.status)):\n\(outcome.output)",
                             fix: "see ostree's words above")
        }
        return outcome.output.split(separator: "\n").map { $0.trimmed }
    }

    /// Runs it and hands back how it ended, failed or not.
    func attempt(_ command: String, _ arguments: [String]) throws -> Processes.Outcome {
        try Processes.runQuietly(["ostree", command, "--repo=" + path] + arguments)
    }
}
