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
            abstract: "Run a command inside master, e.g. to install packages.",
            discussion: """
                The command runs as root in a private mount namespace whose root is master, with \
                /proc, /sys (read-only), /dev and /dev/pts bound in. The host's /etc/resolv.conf is \
                copied into master first, so it ends up in the next published generation (sessions \
                get the host's copy anyway). Give --config before the command: everything after -- \
                is the command.
                """)

        @OptionGroup var global: GlobalOptions
        /// Set by `update`, which holds the master lock across run and publish.
        @Flag(help: .hidden) var lockHeldByParent = false
        @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).")
        var command: [String] = []

        mutating func validate() throws {
            if command.first == "--help" || command.first == "-h" { throw CleanExit.helpRequest(Self.self) }
            if command.first == "--" { command.removeFirst() }
            guard !command.isEmpty else { throw ValidationError("give the command after --, e.g. master run -- apt-get install vim") }
        }

        func run() throws {
            try requireRoot()
            let config = try global.load()
            let status = try reporting {
                try Images(config: config, log: printError).run(inMaster: command, lockHeldByCaller: lockHeldByParent)
            }
            if status != 0 { throw ExitCode(status) }
        }
    }
}
