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

final class ParserTests: XCTestCase {
    func testMountinfoLines() {
        let text = """
            22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
            35 22 253:3 / /srv/a\\040b rw,nodev master:4 propagate_from:2 - btrfs /dev/mapper/x rw,space_cache
            36 22 0:5 / /broken rw - 
            40 22 259:65537 /sub /mnt rw - xfs /dev/nvme0n1p1 rw
            """
        let table = Mounts.parseTable(Array(text.utf8))
        XCTAssertEqual(table.map(\.id), [22, 35, 40], "a line without a type is skipped")
        XCTAssertEqual(table[1].mountPoint, "/srv/a b", "octal escapes are undone")
        XCTAssertEqual(table[1].type, "btrfs", "optional fields before the dash are skipped")
        XCTAssertEqual(table[0].device, 21, "0:21")
        XCTAssertEqual(table[1].device, (253 << 8) | 3)
        // glibc's makedev: minor's high bits go above bit 20.
        XCTAssertEqual(table[2].device, (259 << 8) | (1 & 0xff) | ((65537 & 0xffffff00) << 12))
    }

    func testTheUnifiedCgroupLine() {
        XCTAssertEqual(Cgroups.unifiedPath(in: "12:cpu:/x\n0::/user.slice/user-1000.slice/session-3.scope\n"),
                       "/user.slice/user-1000.slice/session-3.scope")
        XCTAssertNil(Cgroups.unifiedPath(in: "12:cpu:/x\n"), "cgroup v1 only")
    }
}
