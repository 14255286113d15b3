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
        let records = try reporting { try global.manager(config).records() }
        if output.json {
            printJSON(StatusJSON(
                backend: config.backend.rawValue, store: config.storePath, current: current?.name ?? "",
                generations: generations.map { generation in
                    .init(name: generation.name, roots: records.filter { $0.generation == generation }.count)
                },
                space: .init(totalBytes: usage.totalBytes, freeBytes: usage.freeBytes,
                             metadataTotalBytes: usage.metadataTotalBytes, metadataFreeBytes: usage.metadataFreeBytes),
                roots: records.map(RootJSON.init)))
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

struct StatusJSON: Encodable {
    struct GenerationJSON: Encodable {
        let name: String
        let roots: Int
    }
    struct Space: Encodable {
        let totalBytes, freeBytes: UInt64
        /// dm-thin only (absent otherwise).
        let metadataTotalBytes, metadataFreeBytes: UInt64?
    }
    let backend, store, current: String
    let generations: [GenerationJSON]
    let space: Space
    let roots: [RootJSON]
}
