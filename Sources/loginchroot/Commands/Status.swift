import ArgumentParser
import LoginChroot
import LoginChrootCore

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the backend, generations, space and sessions.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let backend = Backends.make(config)
        let (current, generations, usage) = try reporting {
            try backend.checkStore()
            return (try? backend.currentGeneration(), try backend.generations(), try backend.usage())
        }
        let records = global.manager(config).records()
        if output.json {
            print(JSON.object([
                ("backend", .string(config.backend.rawValue)), ("store", .string(config.storePath)),
                ("current", .string(current?.name ?? "")),
                ("generations", .array(generations.map { generation in
                    .object([("name", .string(generation.name)),
                             ("roots", .number(UInt64(records.filter { $0.generation == generation }.count)))])
                })),
                ("space", .object([("total_bytes", .number(usage.totalBytes)), ("free_bytes", .number(usage.freeBytes))]
                                  + (usage.metadataTotalBytes.map { [("metadata_total_bytes", JSON.number($0))] } ?? [])
                                  + (usage.metadataFreeBytes.map { [("metadata_free_bytes", JSON.number($0))] } ?? []))),
                ("roots", .array(records.map(\.json))),
            ]).rendered)
            return
        }
        print("backend:     \(config.backend.rawValue) at \(config.storePath)")
        print("current:     \(current?.name ?? "none published")")
        for generation in generations {
            let users = records.filter { $0.generation == generation }.count
            print("generation:  \(generation)\(generation == current ? " (current)" : "")  roots: \(users)")
        }
        print("space:       \(humanBytes(usage.freeBytes)) free of \(humanBytes(usage.totalBytes))")
        if let total = usage.metadataTotalBytes, let free = usage.metadataFreeBytes {
            print("metadata:    \(humanBytes(free)) free of \(humanBytes(total)) (thin pool)")
        }
        print("roots:       \(records.count) (\(records.reduce(0) { $0 + $1.members.count }) sessions)")
        for record in records where record.phase != .active {
            print("  \(record.key): \(record.phase.rawValue) \(record.note)")
        }
    }
}
