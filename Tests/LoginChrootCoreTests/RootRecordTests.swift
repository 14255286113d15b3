import XCTest
import LoginChrootTestSupport
@testable import LoginChrootCore

final class RootRecordTests: XCTestCase {
    func sampleRecord() -> RootRecord {
        var record = RootRecord(key: .perSession(user("alice"), serial: 77), user: user("alice"), uid: 1000,
                                backend: .overlay, generation: Generation(number: 12), phase: .active)
        record.namespaceInode = 4026532999
        record.rootMount = 66
        record.rootDevice = 0x2d
        record.filesystemDevice = 0x2d
        record.mappedDevice = 0x2c
        record.members = [
            Member(id: "100.5000.0", pid: 100, startTime: 5000, cgroup: "/user.slice/loginchroot-alice+77-100", parentCgroup: "/user.slice"),
            Member(id: "200.6000.1", pid: 200, startTime: 6000, cgroup: "", parentCgroup: ""),
        ]
        record.note = "processes survived SIGKILL for 5s: a=b"
        return record
    }

    // MARK: serialization

    func testRoundTripWithMembersAndNote() {
        let record = sampleRecord()
        let text = record.serialized()
        XCTAssertTrue(text.hasPrefix("version=1\n"))
        XCTAssertTrue(text.hasSuffix("\n"))
        XCTAssertTrue(text.containsLiteral("member=200.6000.1 200 6000 - -\n"), "empty cgroups are written as -")
        XCTAssertEqual(RootRecord.parse(text), record)
    }

    func testRoundTripMinimalRecordForEveryPhaseAndBackend() {
        for phase in RootPhase.allCases {
            for backend in BackendKind.allCases {
                let record = RootRecord(key: .perUser(user("bob")), user: user("bob"), uid: 0, backend: backend,
                                        generation: Generation(number: 0), phase: phase)
                XCTAssertEqual(RootRecord.parse(record.serialized()), record, "\(phase) \(backend)")
                XCTAssertFalse(record.serialized().containsLiteral("note="), "an empty note is not written")
            }
        }
    }

    func testNoteNewlinesAreDropped() {
        var record = sampleRecord()
        record.note = "first line\nsecond line"
        let parsed = RootRecord.parse(record.serialized())
        XCTAssertEqual(parsed?.note, "first linesecond line")
        XCTAssertEqual(parsed?.members, record.members, "a note cannot inject lines")
    }

    func testParseRejectsWrongVersionAndGarbage() {
        let good = sampleRecord().serialized()
        XCTAssertNotNil(RootRecord.parse(good))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "version=1", with: "version=2")))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "version=1\n", with: "")), "version is required")
        XCTAssertNil(RootRecord.parse(""))
        XCTAssertNil(RootRecord.parse("garbage"))
        XCTAssertNil(RootRecord.parse("version=1\n"))
        XCTAssertNil(RootRecord.parse(good + "no equals sign here\n"))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "key=alice+77", with: "key=../etc")))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "user=alice", with: "user=al/ice")))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "uid=1000", with: "uid=-1")))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "backend=overlay", with: "backend=zfs")))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "generation=gen-12", with: "generation=gen-012")))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "phase=active", with: "phase=dead")))
        XCTAssertNil(RootRecord.parse(good.replacing(token: "member=200.6000.1 200 6000 - -", with: "member=200.6000.1 200 6000 -")),
                     "a member needs five fields")
        XCTAssertNil(RootRecord.parse(good.replacing(token: "member=200.6000.1 200 ", with: "member=200.6000.1 x ")))
    }

    func testParseToleratesMissingOptionalFields() {
        let text = "version=1\nkey=bob\nuser=bob\nuid=1001\nbackend=btrfs\ngeneration=gen-2\nphase=preparing\n"
        let record = RootRecord.parse(text)
        XCTAssertEqual(record?.namespaceInode, 0)
        XCTAssertEqual(record?.rootMount, 0)
        XCTAssertEqual(record?.members, [])
        XCTAssertEqual(record?.note, "")
        XCTAssertEqual(record?.phase, .preparing)
    }

    // MARK: state machine

    static let events: [RootEvent] = [
        .prepared, .memberJoined, .memberLeft(remaining: 2), .memberLeft(remaining: 0),
        .teardownFailed(reason: "busy"), .teardownRetried, .destroyed,
    ]

    /// The complete table of allowed transitions; every other pair must throw.
    static func expected(_ phase: RootPhase?, _ event: RootEvent) -> RootPhase?? {
        switch (phase, event) {
        case (nil, .memberJoined): return .some(.preparing)
        case (.preparing, .prepared): return .some(.active)
        case (.preparing, .teardownFailed): return .some(.quarantined)
        case (.preparing, .destroyed): return .some(nil)
        case (.active, .memberJoined): return .some(.active)
        case (.active, .memberLeft(remaining: 2)): return .some(.active)
        case (.active, .memberLeft(remaining: 0)): return .some(.closing)
        case (.closing, .destroyed): return .some(nil)
        case (.closing, .teardownFailed): return .some(.quarantined)
        case (.quarantined, .teardownRetried): return .some(.closing)
        case (.quarantined, .destroyed): return .some(nil)
        default: return nil
        }
    }

    func testEveryAllowedTransition() throws {
        XCTAssertEqual(try transition(nil, .memberJoined), .preparing)
        XCTAssertEqual(try transition(.preparing, .prepared), .active)
        XCTAssertEqual(try transition(.preparing, .teardownFailed(reason: "x")), .quarantined)
        XCTAssertNil(try transition(.preparing, .destroyed))
        XCTAssertEqual(try transition(.active, .memberJoined), .active)
        XCTAssertEqual(try transition(.active, .memberLeft(remaining: 1)), .active)
        XCTAssertEqual(try transition(.active, .memberLeft(remaining: 0)), .closing)
        XCTAssertNil(try transition(.closing, .destroyed))
        XCTAssertEqual(try transition(.closing, .teardownFailed(reason: "x")), .quarantined)
        XCTAssertEqual(try transition(.quarantined, .teardownRetried), .closing)
        XCTAssertNil(try transition(.quarantined, .destroyed))
    }

    func testFullTransitionTable() {
        var allowed = 0, forbidden = 0
        for phase in [nil] + RootPhase.allCases.map(Optional.some) {
            for event in Self.events {
                if let next = Self.expected(phase, event) {
                    allowed += 1
                    XCTAssertEqual(try transition(phase, event), next, "\(String(describing: phase)) + \(event)")
                } else {
                    forbidden += 1
                    XCTAssertThrowsError(try transition(phase, event), "\(String(describing: phase)) + \(event)") { error in
                        XCTAssertEqual(error as? InvalidTransition, InvalidTransition(from: phase, event: event))
                    }
                }
            }
        }
        XCTAssertEqual(allowed, 11)
        XCTAssertEqual(forbidden, 5 * Self.events.count - 11)
    }

    func testRepresentativeForbiddenTransitions() {
        let forbidden: [(RootPhase?, RootEvent)] = [
            (nil, .prepared), (nil, .destroyed), (nil, .memberLeft(remaining: 0)),
            (.preparing, .memberJoined), (.preparing, .memberLeft(remaining: 0)), (.preparing, .teardownRetried),
            (.active, .prepared), (.active, .destroyed), (.active, .teardownFailed(reason: "x")), (.active, .teardownRetried),
            (.closing, .memberJoined), (.closing, .memberLeft(remaining: 0)), (.closing, .teardownRetried),
            (.quarantined, .memberJoined), (.quarantined, .prepared), (.quarantined, .teardownFailed(reason: "again")),
        ]
        for (phase, event) in forbidden {
            XCTAssertThrowsError(try transition(phase, event)) { error in
                guard let invalid = error as? InvalidTransition else { return XCTFail("\(error)") }
                XCTAssertEqual(invalid.from, phase)
                XCTAssertEqual(invalid.event, event)
                XCTAssertTrue(invalid.description.containsLiteral("not allowed in phase \(phase?.rawValue ?? "none")"))
            }
        }
    }

    func testApplyMutatesPhase() throws {
        var record = sampleRecord()
        record.phase = .preparing
        XCTAssertTrue(try record.apply(.prepared))
        XCTAssertEqual(record.phase, .active)
        XCTAssertTrue(try record.apply(.memberLeft(remaining: 0)))
        XCTAssertEqual(record.phase, .closing)
        XCTAssertThrowsError(try record.apply(.memberJoined))
        XCTAssertEqual(record.phase, .closing, "a rejected event leaves the phase alone")
        XCTAssertFalse(try record.apply(.destroyed), "destroyed means the record goes away")
        XCTAssertEqual(record.phase, .closing)
    }
}
