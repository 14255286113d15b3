// Platform pieces that need no root: the wait policy, the fd-relative
// file calls the state store uses, and errnos that are outcomes.
import Foundation
import Glibc
import XCTest
import LoginChrootPlatform

final class PlatformTests: XCTestCase {
    func testPollStopsWhenDoneAndGivesUpAtTheDeadline() {
        var calls = 0
        XCTAssertTrue(Deadline(seconds: 5).poll { calls += 1; return calls == 3 })
        XCTAssertEqual(calls, 3)
        calls = 0
        let started = Clock.monotonicSeconds()
        XCTAssertFalse(Deadline(seconds: 0.2).poll { calls += 1; return false })
        XCTAssertGreaterThanOrEqual(Clock.monotonicSeconds() - started, 0.2)
        XCTAssertGreaterThan(calls, 2, "polled more than once")
        calls = 0
        XCTAssertFalse(Deadline(seconds: 0).poll { calls += 1; return false })
        XCTAssertEqual(calls, 1, "a zero deadline still tries once")
    }

    func testFilesRelativeToADirectoryDescriptor() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lc-platform-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let directory = try Descriptor.openDirectory(path)
        XCTAssertNil(try directory.readFile("record", path: "record"), "a missing file is nil, not an error")
        XCTAssertNil(try directory.entryInfo("record", path: "record"))
        try directory.replaceFile("record", with: "one\n", path: "record")
        try directory.replaceFile("record", with: "two\n", path: "record")
        XCTAssertEqual(try directory.readFile("record", path: "record"), "two\n")
        XCTAssertEqual(try directory.entries(), ["record"], "no temporary left behind")
        XCTAssertTrue(directory.hasEntry("record"))
        // A symlink is never followed.
        try FileManager.default.createSymbolicLink(atPath: path + "/link", withDestinationPath: path + "/record")
        XCTAssertThrowsError(try directory.readFile("link", path: "link")) { error in
            XCTAssertEqual((error as? SystemError)?.errno, ELOOP)
        }
        try directory.removeFile("record", path: "record")
        try directory.removeFile("record", path: "record")  // already gone: no error
        XCTAssertEqual(try directory.entries(), ["link"])
    }

    func testAnExpectedErrnoIsAnOutcome() throws {
        XCTAssertNil(try sys("rmdir", "/nonexistent-lc", unless: ENOENT) { rmdir("/nonexistent-lc") })
        XCTAssertThrowsError(try sys("rmdir", "/nonexistent-lc", unless: EEXIST) { rmdir("/nonexistent-lc") }) { error in
            XCTAssertEqual((error as? SystemError)?.errno, ENOENT)
        }
    }
}
