import ArgumentParser
import LoginChroot

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Snapshot master as a new immutable generation and make it current, atomically.",
        discussion: "Open sessions keep their generation; new logins get the new one.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .customLong("export"), help: ArgumentHelp(
        "Also commit the new generation to the fleet's OSTree repository at this path (made if missing), signed with [fleet] signing_key.",
        valueName: "repo"))
    var repository: String?

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let (generation, commit) = try reporting {
            let export = try repository.map { try FleetExport(config: config, configPath: global.config, repository: $0) }
            return try Images(config: config, log: printError).publish(export: export)
        }
        if output.json {
            printJSON(["generation": generation.name, "commit": commit ?? ""])
        } else {
            print("published \(generation); new logins get it")
            if let commit, let repository { print("exported \(generation) to \(repository) as commit \(commit) of \(config.fleetRef)") }
        }
    }
}
