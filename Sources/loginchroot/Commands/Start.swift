import ArgumentParser
import LoginChroot

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bring the store online after boot and reclaim leftovers (safe to run at any time).")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let report = try reporting {
            try Backends.make(config).bringOnline()
            try Backends.make(config).checkStore()
            return try global.manager(config).gc()
        }
        report.actions.forEach { print($0) }
        report.failures.forEach { printError($0) }
        print("store \(config.storePath) online")
        if !report.failures.isEmpty { throw ExitCode(1) }
    }
}
