// The dm-thin backend's own record of its pool: which thin id is master,
// which are generations and sessions, and the pool transaction id they
// match. Pure logic: parsing, rendering, id allocation, and how to settle an
// operation a crash interrupted.
//
// Every pool change is one step of this protocol, under the store's lock:
//   1. save the intent (the volume marked `creating` or `deleting`), with
//      the transaction id T unchanged;
//   2. send the pool message (create_thin, create_snap or delete);
//   3. send `set_transaction_id T T+1`;
//   4. save the result (volume live or gone) with transaction T+1.
// Pool messages are committed by the kernel at once, so after a crash the
// pool's transaction id says how far the operation got.

/// Device-mapper names of a store's devices. dm names are at most 127
/// bytes; pool name (32) + "-session-" + a root key (85) stays below.
public enum ThinNames {
    public static let maxPoolNameLength = 32

    public static func isValidPoolName(_ name: String) -> Bool {
        (1...maxPoolNameLength).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"): return true
            default: return false
            }
        }
    }

    public static func pool(_ poolName: String) -> String { poolName + "-pool" }

    public static func volume(_ poolName: String, _ role: ThinMetadata.Role) -> String {
        switch role {
        case .master: return poolName + "-master"
        case .generation(let generation): return poolName + "-" + generation.name
        case .session(let key): return poolName + "-session-" + key.value
        }
    }
}

public struct ThinMetadata: Equatable, Sendable {
    public enum Role: Hashable, Sendable, CustomStringConvertible {
        case master
        case generation(Generation)
        case session(RootKey)

        public var description: String {
            switch self {
            case .master: return "master"
            case .generation(let generation): return generation.name
            case .session(let key): return "session:" + key.value
            }
        }

        init?(_ text: String) {
            if text == "master" { self = .master; return }
            if let generation = Generation(text) { self = .generation(generation); return }
            if text.hasPrefix("session:"), let key = RootKey(String(text.dropFirst(8))) { self = .session(key); return }
            return nil
        }
    }

    public enum State: String, Sendable {
        case live
        /// Intent saved; the pool may or may not have the volume yet.
        case creating
        /// Intent saved; the pool may or may not still have the volume.
        case deleting
    }

    public struct Volume: Equatable, Sendable {
        public var id: UInt32
        public var role: Role
        public var state: State
        public init(id: UInt32, role: Role, state: State) { self.id = id; self.role = role; self.state = state }
    }

    /// thin ids are 24 bits in the pool's metadata.
    public static let maxID: UInt32 = (1 << 24) - 1

    public var transaction: UInt64 = 0
    /// Size of master and so of every snapshot, in 512-byte sectors.
    public var sectors: UInt64
    /// The pool's allocation unit, in sectors (fixed when the pool is made).
    public var blockSectors: UInt64
    public var current: Generation?
    public var volumes: [Volume] = []

    public init(sectors: UInt64, blockSectors: UInt64) { self.sectors = sectors; self.blockSectors = blockSectors }

    public func volume(_ role: Role) -> Volume? { volumes.first { $0.role == role } }
    public var pending: Volume? { volumes.first { $0.state != .live } }

    public var liveGenerations: [Generation] {
        volumes.compactMap { volume in
            if case .generation(let generation) = volume.role, volume.state == .live { return generation }
            return nil
        }.sorted()
    }

    /// After every generation ever numbered here, unfinished ones included.
    public var nextGeneration: Generation {
        (volumes.compactMap { volume -> Generation? in
            if case .generation(let generation) = volume.role { return generation }
            return nil
        }.max() ?? Generation(number: 0)).next
    }

    public var sessions: [RootKey] {
        volumes.compactMap { volume in
            if case .session(let key) = volume.role { return key }
            return nil
        }.sorted()
    }

    /// The lowest id no volume holds, in any state: an id is free for reuse
    /// only once its delete is finished and recorded.
    public func freeID() -> UInt32? {
        let used = Set(volumes.map(\.id))
        var id: UInt32 = 1
        while used.contains(id) {
            if id == ThinMetadata.maxID { return nil }
            id += 1
        }
        return id
    }

    /// Step 4 of the protocol: the pending operation is done.
    public mutating func finishPending() {
        guard let index = volumes.firstIndex(where: { $0.state != .live }) else { return }
        if volumes[index].state == .deleting {
            volumes.remove(at: index)
        } else {
            volumes[index].state = .live
        }
        transaction += 1
    }

    /// How to settle the metadata with a pool at `poolTransaction`.
    public enum Settlement: Equatable, Sendable {
        case consistent
        /// The pool got as far as step 3: keep the operation.
        case rollForward
        /// The pool never reached step 3: make sure `id` is gone from the
        /// pool (delete it, ignoring "no such device") and drop the volume.
        /// A half-made volume is removed; a half-deleted one finishes.
        case discard(id: UInt32)
        /// Neither: the metadata and the pool have drifted apart.
        case mismatch
    }

    public func settlement(poolTransaction: UInt64) -> Settlement {
        guard let pending else { return poolTransaction == transaction ? .consistent : .mismatch }
        if poolTransaction == transaction + 1 { return .rollForward }
        if poolTransaction == transaction { return .discard(id: pending.id) }
        return .mismatch
    }

    /// Applies `discard` to the metadata once the pool has no `id`.
    public mutating func dropPending() {
        volumes.removeAll { $0.state != .live }
    }

    // MARK: text form

    static let header = "loginchroot-thin-metadata 1"

    public var rendered: String {
        var lines = [ThinMetadata.header, "transaction \(transaction)", "sectors \(sectors)", "block_sectors \(blockSectors)"]
        if let current { lines.append("current \(current.name)") }
        for volume in volumes.sorted(by: { $0.id < $1.id }) {
            lines.append("volume \(volume.id) \(volume.role) \(volume.state.rawValue)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Parses what `rendered` wrote. Any deviation is an error naming the
    /// line: this file decides which devices get deleted.
    public static func parse(_ text: String, file: String) throws -> ThinMetadata {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        func fail(_ line: Int, _ problem: String) -> SetupError {
            SetupError("\(file):\(line): \(problem)",
                       fix: "restore \(file) from a backup, or compare it with the pool ('loginchroot status')")
        }
        guard lines.first == header else { throw fail(1, "not a loginchroot dm-thin metadata file") }
        var metadata = ThinMetadata(sectors: 0, blockSectors: 0)
        var seenIDs = Set<UInt32>(), seenRoles = Set<Role>()
        var sawTransaction = false
        for (index, line) in lines.enumerated().dropFirst() {
            let number = index + 1
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            switch (fields.first, fields.count) {
            case ("transaction", 2):
                guard let value = UInt64(fields[1]) else { throw fail(number, "bad transaction id '\(fields[1])'") }
                metadata.transaction = value
                sawTransaction = true
            case ("sectors", 2):
                guard let value = UInt64(fields[1]), value > 0 else { throw fail(number, "bad size '\(fields[1])'") }
                metadata.sectors = value
            case ("block_sectors", 2):
                guard let value = UInt64(fields[1]), value > 0 else { throw fail(number, "bad block size '\(fields[1])'") }
                metadata.blockSectors = value
            case ("current", 2):
                guard let generation = Generation(fields[1]) else { throw fail(number, "bad generation '\(fields[1])'") }
                metadata.current = generation
            case ("volume", 4):
                guard let id = UInt32(fields[1]), (1...maxID).contains(id) else { throw fail(number, "bad thin id '\(fields[1])'") }
                guard let role = Role(fields[2]) else { throw fail(number, "bad volume role '\(fields[2])'") }
                guard let state = State(rawValue: fields[3]) else { throw fail(number, "bad volume state '\(fields[3])'") }
                guard seenIDs.insert(id).inserted else { throw fail(number, "thin id \(id) listed twice") }
                guard seenRoles.insert(role).inserted else { throw fail(number, "\(role) listed twice") }
                metadata.volumes.append(Volume(id: id, role: role, state: state))
            default:
                throw fail(number, "unexpected line '\(line)'")
            }
        }
        guard sawTransaction, metadata.sectors > 0, metadata.blockSectors > 0 else {
            throw fail(lines.count, "transaction, sectors or block_sectors line missing")
        }
        guard metadata.volumes.filter({ $0.state != .live }).count <= 1 else {
            throw fail(lines.count, "more than one unfinished operation")
        }
        if let current = metadata.current, metadata.volume(.generation(current))?.state != .live {
            throw fail(lines.count, "current generation \(current) has no live volume")
        }
        return metadata
    }
}

/// The status line of a thin-pool target.
public struct ThinPoolStatus: Equatable, Sendable {
    public var transaction: UInt64
    public var metadataUsed: UInt64, metadataTotal: UInt64  // 4 KiB blocks
    public var dataUsed: UInt64, dataTotal: UInt64          // pool blocks
    /// rw, ro (metadata trouble) or out_of_data_space.
    public var mode: String

    /// "TXID USED_META/TOTAL_META USED_DATA/TOTAL_DATA HELD_ROOT MODE ..."
    /// nil for "Fail" or anything else unexpected.
    public init?(_ line: String) {
        let fields = line.split(separator: " ").map(String.init)
        func pair(_ field: String) -> (UInt64, UInt64)? {
            let parts = field.split(separator: "/")
            guard parts.count == 2, let used = UInt64(parts[0]), let total = UInt64(parts[1]), total > 0 else { return nil }
            return (used, total)
        }
        guard fields.count >= 5, let transaction = UInt64(fields[0]),
              let metadata = pair(fields[1]), let data = pair(fields[2]) else { return nil }
        self.transaction = transaction
        (metadataUsed, metadataTotal) = metadata
        (dataUsed, dataTotal) = data
        mode = fields[4]
    }

    public var dataFreePercent: Int { Int((dataTotal - min(dataUsed, dataTotal)) * 100 / dataTotal) }
    public var metadataFreePercent: Int { Int((metadataTotal - min(metadataUsed, metadataTotal)) * 100 / metadataTotal) }
}
