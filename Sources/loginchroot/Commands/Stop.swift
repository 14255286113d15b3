import ArgumentParser
import LoginChroot

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Take the store offline, unless a session root is open (before removing the package).",
        discussion: """
            Refuses, with exit status \(Stop.rootsOpen), while any session root is open (a \
            quarantined one included): end them first ('loginchroot sessions', 'loginchroot end \
            USER', 'loginchroot gc'). Otherwise reclaims leftovers as gc does, unmounts the state \
            directory's pins, and unmounts a store image that 'start' mounted, or deactivates the \
            dm-thin pool. A store you mount yourself stays mounted. Logins through the module are \
            refused until 'loginchroot start'.
            """)

    /// EX_TEMPFAIL: the package's prerm refuses the removal on this status only.
    static let rootsOpen: Int32 = 75

    @OptionGroup var global: GlobalOptions

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let manager = global.manager(config)
        let open = try reporting { try manager.records() }
        guard open.isEmpty else {
            printError("session roots are open: \(open.map(\.key.value).joined(separator: ", ")); "
                       + "end them first ('loginchroot end USER'), or wait for their logouts")
            throw ExitCode(Stop.rootsOpen)
        }
        // What gc cannot reclaim (a store that is not online, say) stays
        // in the store; it does not keep the store online.
        do { try manager.gc().failures.forEach { printError($0) } } catch { printError("gc: \(error)") }
        let done = try reporting { () -> String? in
            try StateStore(directory: config.stateDir).release()
            return try Backends.make(config).takeOffline()
        }
        print(done ?? "store \(config.storePath) was not online")
    }
}
