import ArgumentParser
import LoginChroot

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Snapshot master as a new immutable generation and make it current, atomically.",
        discussion: "Open sessions keep their generation; new logins get the new one.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let generation = try reporting { try Images(config: config, log: printError).publish() }
        if output.json { printJSON(["generation": generation.name]) } else {
            print("published \(generation); new logins get it")
        }
    }
}
