// Property tests over many random inputs for everything the module parses
// that an attacker or a crash can corrupt: the store's thin metadata, the
// state records, the module arguments and PAM_USER. Each must parse to
// something that keeps its guarantees, or be refused; never crash.
// (The config file has its own in ConfigParserTests.)
import XCTest
@testable import LoginChrootCore

final class CorruptInputTests: XCTestCase {
    static let rounds = 20_000
    /// Bytes that mean something in the store's files.
    static let interesting = Array(" =\n\t0123456789-:+/".utf8) + [0xFF, 0x00]

    func testCorruptThinMetadataParsesOrIsRefused() {
        var metadata = ThinMetadata(sectors: 524288, blockSectors: 128)
        metadata.transaction = 9
        metadata.current = Generation(number: 2)
        metadata.volumes = [.init(id: 1, role: .master, state: .live),
                            .init(id: 2, role: .generation(Generation(number: 2)), state: .live),
                            .init(id: 3, role: .session(RootKey("alice+7")!), state: .creating)]
        var refused = 0
        let held = countHolding(mutationsOf: metadata.rendered, seed: 0x5EED_0101, interesting: Self.interesting,
                                rounds: Self.rounds) { text in
            do {
                let parsed = try ThinMetadata.parse(text, file: "/store/thin-metadata")
                // What parses is what renders: nothing half-understood.
                return try ThinMetadata.parse(parsed.rendered, file: "m").rendered == parsed.rendered
                    && Set(parsed.volumes.map(\.id)).count == parsed.volumes.count
                    && parsed.volumes.filter { $0.state != .live }.count <= 1
            } catch let error as SetupError {
                refused += 1
                return error.problem.hasPrefix("/store/thin-metadata:") && !error.fix.isEmpty
            } catch { return false }
        }
        XCTAssertEqual(held, Self.rounds)
        XCTAssertGreaterThan(refused, Self.rounds / 10, "the mutations must reach the refusals")
        recordReliability("corrupt dm-thin store metadata (random mutations)", tries: Self.rounds, held: held)
    }

    func testCorruptStateRecordsParseOrAreIgnored() {
        var record = RootRecord(key: .perUser(UserName("alice")!), user: UserName("alice")!, uid: 1000,
                                backend: .dmThin, generation: Generation(number: 3), phase: .active)
        record.members = [Member(id: "100.5000.0", pid: 100, startTime: 5000, cgroup: "/a/loginchroot-alice-0",
                                 parentCgroup: "/a")]
        let held = countHolding(mutationsOf: record.serialized(), seed: 0x5EED_0102, interesting: Self.interesting,
                                rounds: Self.rounds) { text in
            guard let parsed = RootRecord.parse(text) else { return true }
            return RootRecord.parse(parsed.serialized()) == parsed && parsed.members.allSatisfy { !$0.id.isEmpty }
        }
        XCTAssertEqual(held, Self.rounds)
        recordReliability("corrupt session state records (random mutations)", tries: Self.rounds, held: held)
    }

    func testHostileModuleArgumentsAndUserNames() {
        var random = SplitMix64(seed: 0x5EED_0103)
        let pieces = ["config=", "config=/etc/x.conf", "debug", "/", "..", "%n%s", " ", "\u{0}", "é", "\u{FFFD}",
                      String(repeating: "a", count: 5000), "config=rel", "=", "config=/a/../b"]
        var held = 0
        for _ in 0..<Self.rounds {
            let arguments = (0..<random.below(6)).map { _ in
                (0..<1 + random.below(3)).map { _ in pieces[random.below(pieces.count)] }.joined()
            }
            let parsed = ModuleArguments.parse(arguments)
            let configOK = parsed.configPath.hasPrefix("/") && parsed.configPath.utf8.count <= 1024
                && parsed.ignored.allSatisfy { $0.count <= 64 }
            // PAM_USER arrives as bytes: only plain ASCII names of at most 64 bytes pass.
            let bytes = (0..<random.below(300)).map { _ in
                random.below(3) == 0 ? UInt8(truncatingIfNeeded: random.next()) : Array("ab./ -_$\u{0}".utf8)[random.below(9)]
            }
            let name = UserName(validating: bytes)
            let nameOK = name.map { n in
                n.value.utf8.count <= UserName.maxLength && n.value.utf8.allSatisfy { $0 > 32 && $0 < 127 }
                    && !n.value.contains("/") && !n.value.hasPrefix(".") && !n.value.hasPrefix("-")
            } ?? true
            if configOK && nameOK { held += 1 }
        }
        XCTAssertEqual(held, Self.rounds)
        recordReliability("hostile module arguments and PAM_USER bytes (random)", tries: Self.rounds, held: held)
    }
}
