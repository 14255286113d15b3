// Tests for failure paths found in review: identities forgotten after
// unpinning, a caller that cannot leave its cgroup, and the lock timeout.
import Foundation
import XCTest
@testable import LoginChroot
@testable import LoginChrootCore
import LoginChrootPlatform

final class HardeningTests: ManagerTestCase {
    /// Once the namespace is unpinned its inode and the root's device number
    /// may be reused by the next login: a quarantined root must not keep them,
    /// or a later gc would kill whoever got them.
    func testQuarantineAfterUnpinForgetsTheRootIdentity() throws {
        let manager = makeManager()
        guard case .entered(let reference, let fd) = manager.open(user: UserName("alice")!) else { return XCTFail("not entered") }
        backend.removeFailures = 1000
        guard case .deferred = manager.close(user: UserName("alice")!, reference: reference, hostNamespace: fd) else {
            return XCTFail("expected deferred")
        }
        let record = try XCTUnwrap(state.load(alice))
        XCTAssertEqual(record.phase, .quarantined)
        XCTAssertEqual(record.namespaceInode, 0)
        XCTAssertEqual(record.rootMount, 0)
        host.killCalls = []
        backend.removeFailures = 0
        XCTAssertTrue(try manager.gc().actions.contains("root alice: destroyed"))
        XCTAssertEqual(host.killCalls.first?.identity, RootIdentity(namespaceInode: 0, rootMount: 0),
                       "the retry scans for nothing: the old numbers may belong to someone else now")
    }

    /// A caller that could not leave its session cgroup is reported; killAll
    /// (which spares the caller) still runs for that cgroup.
    func testCallerThatCannotLeaveItsCgroupIsNotKilledByTheManager() throws {
        let manager = makeManager()
        guard case .entered(let reference, let fd) = manager.open(user: UserName("alice")!) else { return XCTFail("not entered") }
        host.moveSucceeds = false
        XCTAssertEqual(manager.close(user: UserName("alice")!, reference: reference, hostNamespace: fd), .closed(destroyed: true))
        XCTAssertEqual(host.movedTo, ["/user.slice"])
        XCTAssertEqual(host.killCalls.first?.cgroups, ["/user.slice/loginchroot-\(manager.config.instanceTag)-alice-0"])
    }

    /// The module never waits forever for the state lock.
    func testLockTimesOutWithAClearMessage() throws {
        let path = temp + "/lock"
        var held: FileLock? = try FileLock(path: path)
        let started = Date()
        XCTAssertThrowsError(try FileLock(path: path, timeoutSeconds: 1)) { error in
            XCTAssertTrue("\(error)".containsLiteral("locked by another process"), "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        XCTAssertNotNil(held)
        held = nil
        XCTAssertNoThrow(try FileLock(path: path, timeoutSeconds: 1), "free once released")
    }

    /// Record files must be named after their key; a stray temporary file is
    /// never taken for a record.
    func testRecordsAreOnlyReadUnderTheirOwnName() throws {
        try FileManager.default.createDirectory(atPath: state.rootsDir, withIntermediateDirectories: true)
        let record = try RootRecord.opening(key: alice, user: UserName("alice")!, uid: 1000, backend: .btrfs,
                                            generation: Generation(number: 1))
        try state.save(record)
        XCTAssertEqual(try state.load(alice), record)
        try record.serialized().write(toFile: state.rootsDir + "/alice.tmp", atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try state.load(RootKey("alice.tmp")!), "content names alice, file names alice.tmp: quarantined, not absent")
        XCTAssertNil(try state.load(RootKey("bob")!), "no record is nil")
        let scan = try state.scan()
        XCTAssertEqual(scan.records.map(\.key), [alice])
        XCTAssertEqual(scan.unreadable, ["alice.tmp"])
        let names = try FileManager.default.contentsOfDirectory(atPath: state.rootsDir).sorted()
        XCTAssertEqual(names, ["alice", "alice.tmp"], "the atomic write left no temporary behind")
    }
}
