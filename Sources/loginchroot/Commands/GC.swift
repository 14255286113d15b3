import ArgumentParser
import LoginChroot

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Reclaim what crashed sessions left and remove unused generations.",
        discussion: "Safe at boot and at any time: it acts on a root only under its user's lock, never waits for one, and never touches a live session.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let report = try reporting {
            try Backends.make(config).bringOnline()
            return try global.manager(config).gc()
        }
        if output.json {
            printJSON(["actions": report.actions, "failures": report.failures])
        } else {
            report.actions.forEach { print($0) }
            report.failures.forEach { printError($0) }
            if report.actions.isEmpty && report.failures.isEmpty { print("nothing to reclaim") }
        }
        if !report.failures.isEmpty { throw ExitCode(1) }
    }
}
