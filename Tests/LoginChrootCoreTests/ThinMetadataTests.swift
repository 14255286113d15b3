import XCTest
@testable import LoginChrootCore

final class ThinMetadataTests: XCTestCase {
    func sample() -> ThinMetadata {
        var metadata = ThinMetadata(sectors: 524288, blockSectors: 128)
        metadata.transaction = 7
        metadata.current = Generation(number: 2)
        metadata.volumes = [
            .init(id: 1, role: .master, state: .live),
            .init(id: 2, role: .generation(Generation(number: 1)), state: .live),
            .init(id: 4, role: .generation(Generation(number: 2)), state: .live),
            .init(id: 3, role: .session(RootKey("alice")!), state: .live),
        ]
        return metadata
    }

    func testRoundTrip() throws {
        let metadata = sample()
        let parsed = try ThinMetadata.parse(metadata.rendered, file: "m")
        XCTAssertEqual(parsed.transaction, 7)
        XCTAssertEqual(parsed.current, Generation(number: 2))
        XCTAssertEqual(parsed.volumes.map(\.id), [1, 2, 3, 4], "rendered in id order")
        XCTAssertEqual(parsed.rendered, metadata.rendered)
        XCTAssertEqual(parsed.liveGenerations, [Generation(number: 1), Generation(number: 2)])
        XCTAssertEqual(parsed.sessions, [RootKey("alice")!])
        XCTAssertEqual(parsed.nextGeneration, Generation(number: 3))
        var unfinished = parsed
        unfinished.volumes.append(.init(id: 8, role: .generation(Generation(number: 5)), state: .creating))
        XCTAssertEqual(unfinished.nextGeneration, Generation(number: 6), "a number is never handed out twice")
        XCTAssertEqual(ThinMetadata(sectors: 1, blockSectors: 1).nextGeneration, Generation(number: 1))
        var perSession = sample()
        perSession.volumes.append(.init(id: 9, role: .session(RootKey("bob+12")!), state: .creating))
        XCTAssertEqual(try ThinMetadata.parse(perSession.rendered, file: "m").volume(.session(RootKey("bob+12")!))?.state, .creating)
    }

    func testFreeIDReusesOnlyFinishedDeletes() {
        var metadata = sample()
        XCTAssertEqual(metadata.freeID(), 5)
        metadata.volumes.removeAll { $0.id == 3 }
        XCTAssertEqual(metadata.freeID(), 3, "a finished delete frees its id")
        metadata.volumes.append(.init(id: 3, role: .session(RootKey("bob")!), state: .deleting))
        XCTAssertEqual(metadata.freeID(), 5, "an id whose delete is unfinished stays taken")
    }

    func testProtocolStepsAndSettlement() {
        var metadata = sample()
        XCTAssertEqual(metadata.settlement(poolTransaction: 7), .consistent)
        XCTAssertEqual(metadata.settlement(poolTransaction: 8), .mismatch, "pool moved with nothing pending")
        XCTAssertEqual(metadata.settlement(poolTransaction: 6), .mismatch, "metadata newer than the pool")

        // Step 1 of a create: intent saved, transaction unchanged.
        metadata.volumes.append(.init(id: 5, role: .session(RootKey("bob")!), state: .creating))
        XCTAssertEqual(metadata.settlement(poolTransaction: 7), .discard(id: 5), "crash before set_transaction_id")
        XCTAssertEqual(metadata.settlement(poolTransaction: 8), .rollForward, "crash after set_transaction_id")
        XCTAssertEqual(metadata.settlement(poolTransaction: 9), .mismatch)

        var forward = metadata
        forward.finishPending()
        XCTAssertEqual(forward.transaction, 8)
        XCTAssertEqual(forward.volume(.session(RootKey("bob")!))?.state, .live)
        XCTAssertEqual(forward.settlement(poolTransaction: 8), .consistent)

        var back = metadata
        back.dropPending()
        XCTAssertNil(back.volume(.session(RootKey("bob")!)))
        XCTAssertEqual(back.settlement(poolTransaction: 7), .consistent)

        // A delete: rolled forward either way, the volume goes.
        var deleting = sample()
        deleting.volumes[3].state = .deleting
        XCTAssertEqual(deleting.settlement(poolTransaction: 7), .discard(id: 3))
        deleting.finishPending()
        XCTAssertNil(deleting.volume(.session(RootKey("alice")!)))
        XCTAssertEqual(deleting.transaction, 8)
    }

    func testParseRejectsAnythingOdd() {
        let good = sample().rendered
        let bad: [(String, String)] = [
            ("", "not a loginchroot"),
            ("loginchroot-thin-metadata 2\n", "not a loginchroot"),
            (good + "volume 3 session:bob live\n", "thin id 3 listed twice"),
            (good + "volume 9 master live\n", "master listed twice"),
            (good + "volume 0 session:bob live\n", "bad thin id"),
            (good + "volume 16777216 session:bob live\n", "bad thin id"),
            (good + "volume 9 session:../x live\n", "bad volume role"),
            (good + "volume 9 session:bob zombie\n", "bad volume state"),
            (good + "volume 9 gen-3 creating\nvolume 10 gen-4 deleting\n", "more than one unfinished"),
            (good + "extra\n", "unexpected line"),
            (good.replacingFirst("current gen-2", with: "current gen-9"), "has no live volume"),
            (good.replacingFirst("transaction 7\n", with: ""), "line missing"),
        ]
        for (text, expected) in bad {
            XCTAssertThrowsError(try ThinMetadata.parse(text, file: "/s/thin-metadata"), expected) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(expected), "\(message) lacks \(expected)")
                XCTAssertTrue(message.contains("/s/thin-metadata:"), "names the file and line: \(message)")
            }
        }
    }

    func testPoolStatus() throws {
        let status = try XCTUnwrap(ThinPoolStatus("3 150/4096 800/8192 - rw discard_passdown error_if_no_space - 1024"))
        XCTAssertEqual(status.transaction, 3)
        XCTAssertEqual(status.dataFreePercent, 90)
        XCTAssertEqual(status.metadataFreePercent, 96)
        XCTAssertEqual(status.mode, "rw")
        XCTAssertEqual(ThinPoolStatus("0 10/10 100/100 - out_of_data_space discard_passdown error_if_no_space -")?.dataFreePercent, 0)
        XCTAssertNil(ThinPoolStatus("Fail"))
        XCTAssertNil(ThinPoolStatus("1 2/0 3/4 - rw"), "a zero total is not a status")
    }

    func testDeviceNamesStayWithinDeviceMapperLimits() {
        let pool = String(repeating: "p", count: ThinNames.maxPoolNameLength)
        XCTAssertTrue(ThinNames.isValidPoolName(pool))
        let longestKey = RootKey.perSession(UserName(String(repeating: "u", count: UserName.maxLength))!, serial: UInt64.max)
        XCTAssertLessThanOrEqual(ThinNames.volume(pool, .session(longestKey)).utf8.count, 127)
        XCTAssertEqual(ThinNames.volume("lc", .generation(Generation(number: 3))), "lc-gen-3")
        XCTAssertEqual(ThinNames.pool("lc"), "lc-pool")
        for name in ["", "a/b", "a b", "a.b", String(repeating: "p", count: 33), "é"] {
            XCTAssertFalse(ThinNames.isValidPoolName(name), name)
        }
    }
}

private extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = range(of: target) else { return self }
        return replacingCharacters(in: range, with: replacement)
    }
}
