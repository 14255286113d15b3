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
            let status: Int32 = try reporting {
                let backend = Backends.make(config)
                try backend.checkStore()
                let state = try StateStore(directory: config.stateDir)
                // One writer of master at a time; publish takes the same lock
                // (and taking it creates the state directory).
                let lock = lockHeldByParent ? nil : try state.masterLock()
                let layout = try backend.masterLayout()
                let plan = SessionPlan.master(rootMounts: layout.mounts, rootSubpath: layout.rootSubpath)
                let host = try Namespaces.openCurrentMountNamespace()
                // This process moves into master in its own namespace; the
                // mounts vanish with it.
                _ = try Roots.build(plan, staging: state.stagingDir, pin: nil, host: host, log: printError)
                _ = Roots.enterHome(plan.home)
                let result = try Processes.run(command)
                // update publishes next, and labels then.
                if !lockHeldByParent && SELinux.isEnabled() {
                    try Namespaces.enter(host, what: "host namespace")
                    try ImageLabels.labelMaster(backend, state: state, log: printError)
                }
                withExtendedLifetime(lock) {}
                return result
            }
            if status != 0 { throw ExitCode(status) }
        }
    }
}
