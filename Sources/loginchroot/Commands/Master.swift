import ArgumentParser
import Glibc
import LoginChroot
import LoginChrootCore
import LoginChrootPlatform

struct Master: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work on master, the mutable golden root.", subcommands: [Run.self])

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a command inside master, with /proc, /sys, /dev and the host's resolv.conf, e.g. to install packages.")

        @OptionGroup var global: GlobalOptions
        @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).")
        var command: [String] = []

        mutating func validate() throws {
            if command.first == "--" { command.removeFirst() }
            guard !command.isEmpty else { throw ValidationError("give the command after --, e.g. master run -- apt-get install vim") }
        }

        func run() throws {
            try requireRoot()
            let config = try global.load()
            let status: Int32 = try reporting {
                let backend = Backends.make(config)
                try backend.checkStore()
                try StateStore(directory: config.stateDir).prepare()
                // One writer of master at a time; publish takes the same lock.
                let lock = try MasterLock(config)
                let layout = try backend.masterLayout()
                let plan = SessionPlan.master(rootMounts: layout.mounts, rootSubpath: layout.rootSubpath)
                let host = LinuxSessionHost(log: printError)
                // This process moves into master in its own namespace; the
                // mounts vanish with it.
                _ = try host.buildRoot(plan, staging: StateStore(directory: config.stateDir).stagingDir, pin: nil)
                let result = try Processes.run(command)
                withExtendedLifetime(lock) {}
                return result
            }
            if status != 0 { throw ExitCode(status) }
        }
    }
}

/// Serialises writers of master (master run, update, publish).
final class MasterLock {
    let lock: FileLock
    init(_ config: Config) throws {
        lock = try FileLock(path: joinPath(config.stateDir, "master.lock"))
    }
}
