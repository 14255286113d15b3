import ArgumentParser
import LoginChroot

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the open session roots and their sessions.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let records = try reporting { try global.manager(config).records() }
        if output.json {
            printJSON(records.map(RootJSON.init))
            return
        }
        if records.isEmpty { print("no open session roots"); return }
        print("ROOT\tUSER\tGENERATION\tPHASE\tSESSIONS\tPIDS")
        for record in records {
            let pids = record.members.map { String($0.pid) }.joined(separator: ",")
            print("\(record.key)\t\(record.user)\t\(record.generation)\t\(record.phase.rawValue)\t\(record.members.count)\t\(pids)")
        }
    }
}
