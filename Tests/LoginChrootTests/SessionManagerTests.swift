// SessionManager against a fake host and a fake backend, with a real
// StateStore in a fresh temporary directory. No root, mounts or namespaces.
import Foundation
import XCTest
import LoginChrootTestSupport
@testable import LoginChroot
@testable import LoginChrootCore
import LoginChrootPlatform

/// What every manager test starts from: a fake host with alice, bob and
/// root, a fake backend, and a state directory of its own.
class ManagerTestCase: XCTestCase {
    var temp = ""
    var host = FakeSystem(fdDirectory: "/nonexistent")
    var backend = FakeBackend()
    var logs: [String] = []

    let alice = RootKey.perUser(UserName("alice")!)
    var state: StateStore { try! StateStore(directory: temp + "/state") }
    /// This instance's tag in its cgroup names (Config.instanceTag).
    var tag: String { makeManager().config.instanceTag }

    override func setUpWithError() throws {
        temp = FileManager.default.temporaryDirectory.appendingPathComponent("loginchroot-unit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: temp, withIntermediateDirectories: true)
        host = FakeSystem(fdDirectory: temp)
        backend = FakeBackend()
        logs = []
        host.add(testAccount("alice", uid: 1000, groups: ["alice", "audio"]))
        host.add(testAccount("bob", uid: 1001, groups: ["bob", "wheel"]))
        host.add(testAccount("root", uid: 0, groups: ["root"]))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: temp)
    }

    func makeManager(_ adjust: (inout Config) -> Void = { _ in }) -> SessionManager {
        var config = Config()
        config.stateDir = temp + "/state"
        adjust(&config)
        return SessionManager(config: config, backend: backend, namespaces: host, reaper: host, lookupAccount: host.lookupAccount,
                              log: { [unowned self] in self.logs.append($0) })
    }
}

final class SessionManagerTests: ManagerTestCase {

    /// Opens a session that must enter a root; returns what close_session gets.
    @discardableResult
    func enter(_ manager: SessionManager, _ name: String = "alice",
               file: StaticString = #filePath, line: UInt = #line) -> (reference: String, fd: Int32) {
        let outcome = manager.open(user: UserName(name)!)
        guard case .entered(let reference, let fd) = outcome else {
            XCTFail("expected to enter a root, got \(outcome)", file: file, line: line)
            return ("", -1)
        }
        return (reference, fd)
    }

    func recordFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: state.rootsDir)) ?? []).sorted()
    }

    func assertFailed(_ outcome: OpenOutcome, reasonContains needle: String, file: StaticString = #filePath, line: UInt = #line) {
        guard case .failed(let message, let reason) = outcome else {
            return XCTFail("expected .failed, got \(outcome)", file: file, line: line)
        }
        XCTAssertFalse(message.isEmpty, file: file, line: line)
        XCTAssertTrue(reason.containsLiteral(needle), "reason '\(reason)' lacks '\(needle)'", file: file, line: line)
    }

    // MARK: open

    func testFirstOpenCreatesRoot() throws {
        let manager = makeManager()
        let outcome = manager.open(user: user("alice"))
        XCTAssertEqual(outcome, .entered(reference: "alice 1000.10000.0", hostNamespace: host.hostNamespaces[0].fd))

        XCTAssertEqual(backend.calls, ["checkOnline", "currentGeneration", "prepare alice gen-1"])
        XCTAssertEqual(backend.prepared.count, 1)
        XCTAssertEqual(host.builtPlans.count, 1)
        let built = try XCTUnwrap(host.builtPlans.first)
        XCTAssertEqual(built.plan.key, alice)
        XCTAssertEqual(built.staging, state.stagingDir)
        XCTAssertEqual(built.pin, state.pinPath(alice))
        XCTAssertEqual(built.plan.rootMounts, [.directory("sessions/alice")])
        XCTAssertEqual(built.plan.rootSubpath, "sessions/alice/root")
        XCTAssertEqual(built.plan.home, "/home/alice")
        XCTAssertTrue(built.plan.edits.contains(.reconcileGroups(user: "alice", groups: host.accounts["alice"]!.groups)))
        XCTAssertEqual(built.plan.runtimeDirectory?.path, "/run/user/1000")
        // buildRoot pins the namespace and leaves the caller inside: the
        // record is saved from there, through the state directory's fd.
        XCTAssertEqual(host.joined, [])
        XCTAssertEqual(host.returnedToHost, [])
        XCTAssertEqual(host.homes, ["/home/alice"], "the caller starts in the user's home (after the lock is released)")

        // The caller went into its own cgroup before the namespace changed.
        XCTAssertEqual(host.placements, [CgroupPlacement(cgroup: "/user.slice/loginchroot-\(tag)-alice-0", parent: "/user.slice")])
        let order = host.calls.filter { ["placeCaller", "openHostNamespace", "buildRoot", "joinRoot"].contains(String($0.prefix { $0 != " " })) }
        XCTAssertEqual(order, ["placeCaller loginchroot-\(tag)-alice-0", "openHostNamespace", "buildRoot alice"])
        XCTAssertEqual(host.closedHostNamespaces, [], "the host namespace fd goes to close_session")
        XCTAssertEqual(host.removedCgroups, [])

        let record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.phase, .active)
        XCTAssertEqual(record.user, user("alice"))
        XCTAssertEqual(record.uid, 1000)
        XCTAssertEqual(record.backend, .btrfs)
        XCTAssertEqual(record.generation, Generation(number: 1))
        XCTAssertEqual(record.namespaceInode, 4026532001)
        XCTAssertEqual(record.rootMount, 77)
        XCTAssertEqual(record.members, [Member(id: "1000.10000.0", pid: 1000, startTime: 10000,
                                               cgroup: "/user.slice/loginchroot-\(tag)-alice-0", parentCgroup: "/user.slice")])
        XCTAssertEqual(recordFiles(), ["alice"], "no temporary files left behind")
    }

    func testSecondOpenOfSameUserJoins() throws {
        let manager = makeManager()
        enter(manager)
        let second = enter(manager)
        XCTAssertEqual(second.reference, "alice 1001.10010.1")
        XCTAssertEqual(backend.prepared.count, 1, "no second snapshot")
        XCTAssertEqual(host.builtPlans.count, 1, "the second session joins the pinned namespace")
        XCTAssertEqual(host.joined, [state.pinPath(alice)])
        let record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.phase, .active)
        XCTAssertEqual(record.members.map(\.pid), [1000, 1001])
        XCTAssertEqual(record.members.map(\.cgroup), ["/user.slice/loginchroot-\(tag)-alice-0", "/user.slice/loginchroot-\(tag)-alice-1"])
    }

    func testRootWhoseSessionsAllDiedIsReplacedNotJoined() throws {
        let manager = makeManager()
        enter(manager)
        host.deadPids = [1000]
        backend.current = Generation(number: 2)
        backend.allGenerations.append(Generation(number: 2))
        let session = enter(manager)
        XCTAssertEqual(session.reference, "alice 1001.10010.1", "the serial goes on: the dead root's cgroups had 0")
        XCTAssertEqual(backend.prepared.map(\.generation.number), [1, 2], "a fresh root of the current generation")
        XCTAssertEqual(backend.removed, [alice], "the dead root is torn down first")
        XCTAssertEqual(host.builtPlans.count, 2)
        let record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.generation, Generation(number: 2))
        XCTAssertEqual(record.members.map(\.pid), [1001])
        XCTAssertEqual(record.phase, .active)
    }

    func testJoinUsesTheRootsGenerationNotTheCurrentOne() throws {
        let manager = makeManager()
        enter(manager)
        backend.current = Generation(number: 2)
        enter(manager)
        XCTAssertEqual(try state.load(alice)?.generation, Generation(number: 1))
        XCTAssertEqual(backend.prepared.count, 1)
    }

    func testDifferentUsersGetDifferentRoots() throws {
        let manager = makeManager()
        enter(manager, "alice")
        enter(manager, "bob")
        XCTAssertEqual(backend.prepared.map(\.key.value), ["alice", "bob"])
        XCTAssertEqual(recordFiles(), ["alice", "bob"])
        XCTAssertEqual(host.builtPlans.map(\.pin), [state.pinPath(alice), state.pinPath(.perUser(user("bob")))])
    }

    func testPerSessionModeGivesDistinctKeys() throws {
        let manager = makeManager { $0.mode = .perSession }
        let first = enter(manager)
        let second = enter(manager)
        XCTAssertEqual(first.reference, "alice+1000 1000.10000.0")
        XCTAssertEqual(second.reference, "alice+1001 1001.10010.0")
        XCTAssertEqual(backend.prepared.map(\.key.value), ["alice+1000", "alice+1001"])
        XCTAssertEqual(host.builtPlans.count, 2, "per-session roots are never shared")
        XCTAssertEqual(host.builtPlans.map(\.pin), [state.pinPath(.perSession(user("alice"), serial: 1000)),
                                                   state.pinPath(.perSession(user("alice"), serial: 1001))])
        XCTAssertEqual(recordFiles(), ["alice+1000", "alice+1001"])
        XCTAssertEqual(try state.scan().records.map(\.members.count), [1, 1])
    }

    func testPerSessionSamePidGetsAFreshSerial() throws {
        host.fixedPid = 1000
        let manager = makeManager { $0.mode = .perSession }
        enter(manager)
        enter(manager)
        let serial = UInt64(1000) + (1 << 32)
        XCTAssertEqual(backend.prepared.map(\.key.value), ["alice+1000", "alice+\(serial)"])
        XCTAssertNotNil(try state.load(.perSession(user("alice"), serial: serial)))
    }

    func testWithoutACgroupTheLoginFails() throws {
        host.cgroupsAvailable = false
        let manager = makeManager()
        guard case .failed(_, let reason) = manager.open(user: user("alice")) else {
            return XCTFail("a session whose processes only the /proc scan could find is refused")
        }
        XCTAssertTrue(reason.containsLiteral("no cgroup2"), reason)
        XCTAssertEqual(host.builtPlans.count, 0)
        XCTAssertEqual(backend.snapshots, [])
    }

    func testExemptRootIsLeftAlone() {
        let manager = makeManager()
        guard case .leftAlone = manager.open(user: user("root")) else { return XCTFail("root must be exempt") }
        assertNothingTouched()
    }

    func testExemptUserIsLeftAlone() {
        let manager = makeManager { $0.exemptUsers = ["root", "bob"] }
        XCTAssertEqual(manager.open(user: user("bob")), .leftAlone(reason: "user bob is exempt"))
        assertNothingTouched()
    }

    func testExemptGroupIsLeftAlone() {
        let manager = makeManager { $0.exemptGroups = ["wheel"] }
        XCTAssertEqual(manager.open(user: user("bob")), .leftAlone(reason: "group wheel is exempt"))
        assertNothingTouched()
        // alice is not in wheel.
        enter(manager, "alice")
    }

    func assertNothingTouched(file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(backend.calls, [], file: file, line: line)
        XCTAssertEqual(host.placements, [], file: file, line: line)
        XCTAssertEqual(host.builtPlans.count, 0, file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: temp + "/state"), "no state directory made", file: file, line: line)
    }

    func testUnknownUserFails() {
        let manager = makeManager()
        let outcome = manager.open(user: user("mallory"))
        XCTAssertEqual(outcome, .failed(userMessage: "Unknown user.", reason: "user mallory has no passwd entry"))
        assertNothingTouched()
    }

    func testLookupErrorFails() {
        host.lookupError = FakeError("nss down")
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "nss down")
        assertNothingTouched()
    }

    func testUnusableStoreFailsBeforeAnythingIsMade() {
        backend.checkStoreError = SetupError("store not initialised", fix: "run init")
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "store not initialised")
        XCTAssertEqual(backend.calls, ["checkOnline"])
        // The store is checked from the login's own cgroup (on dm-thin the
        // check takes the pool's lock), and the caller goes back after.
        let cgroup = "/user.slice/loginchroot-\(tag)-alice-0"
        XCTAssertEqual(host.placements.map(\.cgroup), [cgroup])
        XCTAssertEqual(host.movedTo, ["/user.slice"])
        XCTAssertEqual(host.removedCgroups, [cgroup])
        XCTAssertEqual(recordFiles(), [])
    }

    func testNoPublishedGenerationFailsAndLeavesNoRecord() {
        backend.current = nil
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "no generation")
        XCTAssertEqual(recordFiles(), [])
        XCTAssertEqual(host.movedTo, ["/user.slice"])
        XCTAssertEqual(host.closedHostNamespaces, [host.hostNamespaces[0].fd])
    }

    func testHostNamespaceFailureUndoesPlacement() {
        host.openNamespaceError = FakeError("no fds")
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "no fds")
        XCTAssertEqual(host.movedTo, ["/user.slice"])
        XCTAssertEqual(host.removedCgroups, ["/user.slice/loginchroot-\(tag)-alice-0"])
        XCTAssertEqual(backend.prepared.count, 0)
        XCTAssertEqual(recordFiles(), [])
    }

    func testBackendPrepareFailure() {
        backend.prepareError = FakeError("no space left")
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "no space left")
        XCTAssertEqual(recordFiles(), [], "no record may be left")
        XCTAssertNil(try state.load(alice))
        XCTAssertEqual(host.builtPlans.count, 0)
        // Cgroup placement undone, host namespace fd closed.
        XCTAssertEqual(host.movedTo, ["/user.slice"])
        XCTAssertTrue(host.removedCgroups.contains("/user.slice/loginchroot-\(tag)-alice-0"))
        XCTAssertEqual(host.closedHostNamespaces, [host.hostNamespaces[0].fd])
        XCTAssertEqual(backend.removed, [alice], "a half-made snapshot is removed")
    }

    func testOutOfSpaceRetriesOnceTheStoreReclaimedSpace() {
        backend.prepareError = FakeError("no space left")
        backend.prepareFailures = 1
        backend.reclaimsSpace = true
        let manager = makeManager()
        enter(manager)
        XCTAssertEqual(backend.reclaimAsked, ["fake failure: no space left"])
        XCTAssertEqual(backend.prepared.count, 2)
        XCTAssertEqual(try state.load(alice)?.phase, .active)
        XCTAssertTrue(logs.contains { $0.containsLiteral("retrying after the store reclaimed") }, "\(logs)")
    }

    func testOutOfSpaceFailsWhenNothingIsBeingReclaimed() {
        backend.prepareError = FakeError("no space left")
        backend.prepareFailures = 1
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "no space left")
        XCTAssertEqual(backend.prepared.count, 1, "no retry")
        XCTAssertEqual(recordFiles(), [])
    }

    func testBuildRootFailureRemovesSnapshot() {
        host.buildError = FakeError("mount refused")
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "mount refused")
        XCTAssertEqual(backend.removed, [alice])
        XCTAssertEqual(backend.snapshots, [])
        XCTAssertEqual(recordFiles(), [])
        XCTAssertEqual(host.returnedToHost, [], "a build that fails goes back to the host itself")
        XCTAssertEqual(host.closedHostNamespaces, [host.hostNamespaces[0].fd])
        XCTAssertEqual(host.movedTo, ["/user.slice"])
        XCTAssertTrue(host.removedCgroups.contains("/user.slice/loginchroot-\(tag)-alice-0"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.pinPath(alice)))
        // The next login starts cleanly.
        host.buildError = nil
        enter(manager)
        XCTAssertEqual(try state.load(alice)?.phase, .active)
    }

    func testAFailureInsideTheNewRootRollsItBackFromTheHost() {
        backend.confineError = FakeError("seccomp refused")
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "seccomp refused")
        XCTAssertEqual(host.returnedToHost, [host.hostNamespaces[0].fd], "out of the root before removing it")
        XCTAssertEqual(host.builtPlans.count, 1)
        XCTAssertEqual(backend.removed, [alice])
        XCTAssertEqual(backend.snapshots, [])
        XCTAssertEqual(host.unpinned, [state.pinPath(alice)])
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.pinPath(alice)), "the pin is released")
        XCTAssertEqual(recordFiles(), [])
        XCTAssertEqual(host.closedHostNamespaces, [host.hostNamespaces[0].fd])
        XCTAssertEqual(host.movedTo, ["/user.slice"])
    }

    func testFailedRollbackQuarantinesAndGCFinishesIt() throws {
        host.buildError = FakeError("mount refused")
        backend.removeFailures = 20
        let manager = makeManager()
        assertFailed(manager.open(user: user("alice")), reasonContains: "mount refused")
        let record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.phase, .quarantined)
        XCTAssertTrue(record.note.containsLiteral("snapshot alice busy"), record.note)
        XCTAssertEqual(backend.removed.count, 20, "removal is retried before giving up")

        let report = try manager.gc()
        XCTAssertTrue(report.actions.contains("root alice: destroyed"), "\(report)")
        XCTAssertNil(try state.load(alice))
        XCTAssertEqual(backend.snapshots, [])
    }

    func testARootIsOnlyRemovedByTheBackendThatMadeIt() throws {
        let manager = makeManager()
        let session = enter(manager)
        backend.kind = .overlay  // the admin switched backends with the root open
        guard case .deferred(let reason) = manager.close(user: user("alice"), reference: session.reference,
                                                         hostNamespace: session.fd) else {
            return XCTFail("expected deferred")
        }
        XCTAssertTrue(reason.containsLiteral("on the btrfs backend, and the config now names overlay"), reason)
        XCTAssertEqual(backend.removed, [], "the overlay backend never touches a btrfs snapshot")
        XCTAssertEqual(try state.load(alice)?.phase, .quarantined)
        backend.kind = .btrfs
        XCTAssertTrue(try manager.gc().actions.contains("root alice: destroyed"))
        XCTAssertEqual(backend.snapshots, [])
    }

    func testJoinFailureRemovesTheMember() throws {
        let manager = makeManager()
        enter(manager)
        host.joinError = FakeError("setns denied")
        assertFailed(manager.open(user: user("alice")), reasonContains: "setns denied")
        let record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.members.map(\.pid), [1000])
        XCTAssertEqual(record.phase, .active)
        XCTAssertEqual(host.closedHostNamespaces, [host.hostNamespaces[1].fd])
        XCTAssertEqual(host.movedTo, ["/user.slice"])
        XCTAssertEqual(host.removedCgroups, ["/user.slice/loginchroot-\(tag)-alice-1"])
        XCTAssertEqual(backend.removed, [], "the other session's root stays")
    }

    func testLeftoverRecordsAreTornDownByTheNextOpen() throws {
        for phase in [RootPhase.preparing, .closing, .quarantined] {
            // A fresh fixture per phase (XCTest's own tearDown removes the last one).
            try tearDownWithError()
            try setUpWithError()
            let manager = makeManager()
            var leftover = RootRecord(key: alice, user: user("alice"), uid: 1000, backend: .btrfs,
                                      generation: Generation(number: 1), phase: phase)
            leftover.members = [Member(id: "1.10.0", pid: 1, startTime: 10, cgroup: "/user.slice/loginchroot-\(tag)-alice-1", parentCgroup: "/user.slice")]
            try state.save(leftover)
            backend.snapshots = [alice]

            let session = enter(manager)
            XCTAssertEqual(session.reference, "alice 1000.10000.0", "\(phase)")
            XCTAssertEqual(backend.calls, ["checkOnline", "remove alice", "currentGeneration", "prepare alice gen-1"], "\(phase)")
            XCTAssertEqual(host.killCalls.first?.cgroups, ["/user.slice/loginchroot-\(tag)-alice-1"], "\(phase)")
            XCTAssertTrue(host.unpinned.contains(state.pinPath(alice)), "\(phase)")
            let record = try XCTUnwrap(try state.load(alice))
            XCTAssertEqual(record.phase, .active, "\(phase)")
            XCTAssertEqual(record.members.map(\.pid), [1000], "\(phase)")
            XCTAssertTrue(logs.contains { $0.containsLiteral("left in phase \(phase.rawValue)") }, "\(phase)")
        }
    }

    func testLeftoverThatCannotBeCleanedBlocksTheLogin() throws {
        let manager = makeManager()
        try state.save(RootRecord(key: alice, user: user("alice"), uid: 1000, backend: .btrfs,
                                  generation: Generation(number: 1), phase: .preparing))
        host.killSucceeds = false
        assertFailed(manager.open(user: user("alice")), reasonContains: "could not be cleaned up")
        XCTAssertEqual(backend.prepared.count, 0)
        XCTAssertEqual(try state.load(alice)?.phase, .quarantined)
        // The teardown ran from the login's own cgroup; the caller went back.
        XCTAssertEqual(host.placements.map(\.cgroup), ["/user.slice/loginchroot-\(tag)-alice-0"])
        XCTAssertEqual(host.movedTo, ["/user.slice"])
    }

    // MARK: close

    func testCloseOneOfTwoMembersKeepsTheRoot() throws {
        let manager = makeManager()
        let first = enter(manager)
        enter(manager)
        let outcome = manager.close(user: user("alice"), reference: first.reference, hostNamespace: first.fd)
        XCTAssertEqual(outcome, .closed(destroyed: false))
        XCTAssertEqual(host.returnedToHost, [first.fd])
        XCTAssertEqual(host.movedTo, ["/user.slice"], "the caller leaves its session cgroup before it is killed")
        XCTAssertEqual(host.killCalls.map(\.cgroups), [["/user.slice/loginchroot-\(tag)-alice-0"]])
        XCTAssertNil(host.killCalls.first?.identity, "only that session's processes are killed")
        XCTAssertEqual(host.removedCgroups, ["/user.slice/loginchroot-\(tag)-alice-0"])
        XCTAssertEqual(backend.removed, [])
        XCTAssertEqual(host.unpinned, [])
        let record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.phase, .active)
        XCTAssertEqual(record.members.map(\.pid), [1001])
    }

    func testCloseOfLastMemberDestroysTheRoot() throws {
        let manager = makeManager()
        let first = enter(manager)
        let second = enter(manager)
        XCTAssertEqual(manager.close(user: user("alice"), reference: first.reference, hostNamespace: first.fd), .closed(destroyed: false))
        host.killCalls = []
        XCTAssertEqual(manager.close(user: user("alice"), reference: second.reference, hostNamespace: second.fd), .closed(destroyed: true))
        XCTAssertEqual(host.killCalls.map(\.cgroups), [["/user.slice/loginchroot-\(tag)-alice-1"], []])
        XCTAssertEqual(host.killCalls.last?.identity, RootIdentity(namespaceInode: 4026532001, rootMount: 77, owner: 1000),
                       "the teardown scans /proc for anything still using the root")
        XCTAssertEqual(host.unpinned, [state.pinPath(alice)])
        XCTAssertEqual(backend.removed, [alice])
        XCTAssertNil(try state.load(alice))
        XCTAssertEqual(recordFiles(), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.pinPath(alice)))
    }

    func testACloseFromADelegatedCgroupTearsDownFromItsOwnCgroup() throws {
        // su from a terminal under the user's systemd --user: the user could
        // freeze their own cgroup while the teardown holds the store's lock.
        host.delegated = ["/user.slice"]
        let manager = makeManager()
        let session = enter(manager)
        host.calls = []
        XCTAssertEqual(manager.close(user: user("alice"), reference: session.reference, hostNamespace: session.fd),
                       .closed(destroyed: true))
        let cgroup = "/user.slice/loginchroot-\(tag)-alice-0"
        let steps = host.calls.filter { ["moveCaller", "killAll", "unpin", "removeCgroup"].contains(String($0.prefix { $0 != " " })) }
        XCTAssertEqual(steps, ["moveCaller /user.slice", "killAll [\"\(cgroup)\"]", "moveCaller \(cgroup)",
                               "killAll []", "unpin \(state.pinPath(alice))", "moveCaller /user.slice", "removeCgroup \(cgroup)"])
        XCTAssertEqual(backend.removed, [alice])
    }

    func testTheUserManagerReturnsToItsUnitsCgroupOnceInTheRoot() throws {
        // user@UID.service: systemd delegated its cgroup to the user, and
        // stops it; the module's cgroup only shields the locked steps.
        host.delegated = ["/user.slice"]
        let manager = makeManager()
        guard case .entered = manager.open(user: user("alice"), caller: .userManager) else { return XCTFail("not entered") }
        let cgroup = "/user.slice/loginchroot-\(tag)-alice-0"
        let steps = host.calls.filter { ["placeCaller", "buildRoot", "moveCaller", "removeCgroup"].contains(String($0.prefix { $0 != " " })) }
        XCTAssertEqual(steps, ["placeCaller loginchroot-\(tag)-alice-0", "buildRoot alice",
                               "moveCaller /user.slice", "removeCgroup \(cgroup)"])
        let member = try XCTUnwrap(try state.load(alice)?.members.first)
        XCTAssertEqual(member.cgroup, "", "no cgroup of the module's to kill: systemd stops the unit")
        // A login then joins the root as usual, in a cgroup of its own.
        guard case .entered = manager.open(user: user("alice")) else { return XCTFail("login not entered") }
        XCTAssertEqual(try state.load(alice)?.members.map(\.cgroup), ["", "/user.slice/loginchroot-\(tag)-alice-1"])
    }

    func testAReopenedRootNeverReusesALiveMembersCgroupName() throws {
        // A leftover root (a crashed close) with serials up to 4: the new
        // login's cgroup is -4, so the root's later members start at 5.
        let manager = makeManager()
        var leftover = try RootRecord.opening(key: alice, user: user("alice"), uid: 1000, backend: .btrfs,
                                              generation: Generation(number: 1))
        leftover.nextMember = 4
        try state.save(leftover)
        let first = enter(manager)
        XCTAssertTrue(first.reference.hasSuffix(".4"), first.reference)
        enter(manager)
        XCTAssertEqual(try XCTUnwrap(try state.load(alice)).members.map(\.cgroup),
                       ["/user.slice/loginchroot-\(tag)-alice-4", "/user.slice/loginchroot-\(tag)-alice-5"])
    }

    /// Member ids are documented as "unique per open_session", but the serial
    /// is the member count, which repeats once a member has left. One process
    /// that opens several PAM sessions (same pid and start time) then gets a
    /// duplicate id, and closing either session removes both members and
    /// destroys the root under the session that is still open.
    func testMemberIdsStayUniqueForOneProcessWithSeveralSessions() throws {
        host.fixedPid = 1000
        let manager = makeManager()
        let first = enter(manager)
        let second = enter(manager)
        XCTAssertEqual(manager.close(user: user("alice"), reference: first.reference, hostNamespace: first.fd), .closed(destroyed: false))
        let third = enter(manager)
        let ids = try XCTUnwrap(try state.load(alice)).members.map(\.id)
        XCTAssertEqual(Set(ids).count, ids.count, "member ids \(ids) must be unique; \(second.reference) vs \(third.reference)")
        XCTAssertEqual(manager.close(user: user("alice"), reference: third.reference, hostNamespace: third.fd), .closed(destroyed: false),
                       "the second session is still open")
        XCTAssertEqual(try state.load(alice)?.members.map(\.id), [second.reference.words[1]])
    }

    func testCloseWithoutReferenceHasNothingToDo() throws {
        let manager = makeManager()
        enter(manager)
        for reference in [nil, "", "garbage", "alice", "../x 1.2.0", "alice 1 2"] as [String?] {
            guard case .nothingToDo = manager.close(user: user("alice"), reference: reference, hostNamespace: 51) else {
                return XCTFail("\(String(describing: reference)) must be ignored")
            }
        }
        XCTAssertEqual(manager.close(user: user("bob"), reference: "bob 1.2.0", hostNamespace: 51),
                       .nothingToDo(reason: "root bob is already gone"))
        XCTAssertEqual(backend.removed, [])
        XCTAssertEqual(host.killCalls.count, 0)
        XCTAssertEqual(try state.load(alice)?.members.count, 1)
    }

    func testCloseWithUnknownMemberOnlyReconciles() throws {
        let manager = makeManager()
        enter(manager)
        XCTAssertEqual(manager.close(user: user("alice"), reference: "alice 9.9.9", hostNamespace: 51), .closed(destroyed: false))
        XCTAssertEqual(try state.load(alice)?.members.count, 1)
        XCTAssertEqual(host.killCalls.count, 0)
    }

    func testCloseReclaimsDeadMembersToo() throws {
        let manager = makeManager()
        let first = enter(manager)
        enter(manager)
        host.deadPids = [1001]
        XCTAssertEqual(manager.close(user: user("alice"), reference: first.reference, hostNamespace: first.fd), .closed(destroyed: true))
        XCTAssertNil(try state.load(alice))
        XCTAssertEqual(backend.removed, [alice])
    }

    func testFailedTeardownQuarantinesAndGCRetries() throws {
        let manager = makeManager()
        let session = enter(manager)
        host.killSucceeds = false
        guard case .deferred(let reason) = manager.close(user: user("alice"), reference: session.reference, hostNamespace: session.fd) else {
            return XCTFail("expected deferred")
        }
        XCTAssertTrue(reason.containsLiteral("quarantined"), reason)
        var record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.phase, .quarantined)
        XCTAssertEqual(record.note, "processes survived SIGKILL for 5s")
        XCTAssertEqual(backend.removed, [], "nothing is deleted while processes may still use it")
        XCTAssertEqual(host.unpinned, [])

        // A login meanwhile cannot reuse it.
        assertFailed(manager.open(user: user("alice")), reasonContains: "could not be cleaned up")

        // gc while the processes still survive: still quarantined, reported.
        var report = try manager.gc()
        XCTAssertTrue(report.failures.contains("root alice: processes survived SIGKILL for 5s"), "\(report)")
        record = try XCTUnwrap(try state.load(alice))
        XCTAssertEqual(record.phase, .quarantined)
        XCTAssertTrue(backend.snapshots.contains(alice), "gc keeps the snapshot of a quarantined root")

        // Once they die, gc destroys it.
        host.killSucceeds = true
        report = try manager.gc()
        XCTAssertTrue(report.actions.contains("root alice: destroyed"), "\(report)")
        XCTAssertEqual(report.failures, [])
        XCTAssertNil(try state.load(alice))
        XCTAssertEqual(backend.removed, [alice])
        XCTAssertEqual(host.unpinned, [state.pinPath(alice)])
    }

    func testEnd() throws {
        let manager = makeManager()
        enter(manager)
        enter(manager)
        XCTAssertTrue(try manager.end(alice))
        XCTAssertNil(try state.load(alice))
        XCTAssertEqual(backend.removed, [alice])
        XCTAssertFalse(try manager.end(alice), "ending a root that is gone")

        enter(manager)
        host.killSucceeds = false
        XCTAssertThrowsError(try manager.end(alice)) { error in
            XCTAssertTrue(error is SetupError, "\(error)")
        }
        XCTAssertEqual(try state.load(alice)?.phase, .quarantined)
    }

    // MARK: gc

    func testGCDropsDeadMembersAndDestroysEmptyRoots() throws {
        let manager = makeManager()
        enter(manager)
        enter(manager)
        host.deadPids = [1000]
        var report = try manager.gc()
        XCTAssertEqual(report.actions, ["root alice: dropped 1 dead session(s)"])
        XCTAssertEqual(report.failures, [])
        XCTAssertEqual(try state.load(alice)?.members.map(\.pid), [1001])
        XCTAssertEqual(host.killCalls.map(\.cgroups), [["/user.slice/loginchroot-\(tag)-alice-0"]])
        XCTAssertEqual(host.removedCgroups, ["/user.slice/loginchroot-\(tag)-alice-0"])
        XCTAssertEqual(host.movedTo, [], "gc is not a member; it never moves itself")
        XCTAssertEqual(backend.removed, [])

        host.deadPids = [1000, 1001]
        report = try manager.gc()
        XCTAssertEqual(report.actions, ["root alice: dropped 1 dead session(s)", "root alice: destroyed"])
        XCTAssertNil(try state.load(alice))
        XCTAssertEqual(backend.removed, [alice])
    }

    func testGCLeavesLiveRootsAlone() throws {
        let manager = makeManager()
        enter(manager)
        let report = try manager.gc()
        XCTAssertEqual(report, SessionManager.GCReport())
        XCTAssertEqual(try state.load(alice)?.members.count, 1)
        XCTAssertEqual(backend.removed, [])
        XCTAssertEqual(host.unpinned, [])
    }

    func testGCRemovesACgroupNoSessionOfALiveRootHas() throws {
        let manager = makeManager()
        enter(manager)
        let live = "/user.slice/loginchroot-\(tag)-alice-0"
        let stray = "/user.slice/loginchroot-\(tag)-alice-5"  // its login died before it recorded the session
        host.leftover = [live, stray]
        let report = try manager.gc()
        XCTAssertEqual(report.actions, ["cgroup \(stray): removed (no session)"])
        XCTAssertEqual(host.removedCgroups, [stray])
        XCTAssertEqual(try state.load(alice)?.members.map(\.cgroup), [live])
    }

    func testGCRemovesOrphanSnapshots() throws {
        let manager = makeManager()
        enter(manager)
        backend.snapshots.formUnion([.perUser(user("bob")), .perSession(user("carol"), serial: 5)])
        let report = try manager.gc()
        XCTAssertEqual(report.actions, ["snapshot bob: removed (no record)", "snapshot carol+5: removed (no record)"])
        XCTAssertEqual(backend.snapshots, [alice], "the live root's snapshot stays")
        XCTAssertEqual(backend.removed.map(\.value), ["bob", "carol+5"])
    }

    func testGCReportsSnapshotsItCannotRemove() throws {
        let manager = makeManager()
        backend.snapshots = [.perUser(user("bob"))]
        backend.removeFailures = 20
        let report = try manager.gc()
        XCTAssertEqual(report.failures.count, 1)
        XCTAssertTrue(report.failures[0].hasPrefix("snapshot bob: removing the snapshot: fake failure"), report.failures[0])
    }

    func testGCRemovesOrphanPinsAndCgroups() throws {
        let manager = makeManager()
        enter(manager)
        let ghostPin = joinPath(state.pinsDir, "ghost")
        XCTAssertTrue(FileManager.default.createFile(atPath: ghostPin, contents: nil))
        let live = "/user.slice/loginchroot-\(tag)-alice-0"
        host.leftover = ["/user.slice/loginchroot-\(tag)-ghost-7", live]
        let report = try manager.gc()
        XCTAssertTrue(report.actions.contains("namespace pin ghost: removed (no record)"), "\(report)")
        XCTAssertTrue(report.actions.contains("cgroup /user.slice/loginchroot-\(tag)-ghost-7: removed (no session)"), "\(report)")
        XCTAssertEqual(host.unpinned, [ghostPin], "the live root's pin stays")
        XCTAssertEqual(host.removedCgroups, ["/user.slice/loginchroot-\(tag)-ghost-7"])
        XCTAssertFalse(host.killCalls.contains { $0.cgroups.contains(live) })
    }

    func testOneUsersHeldLockDelaysNoOtherUser() throws {
        let manager = makeManager { $0.lockTimeoutSeconds = 1 }
        var alicesLogin: FileLock? = try state.lock(user: user("alice"), timeoutSeconds: 0)  // stopped inside open
        let started = Date()
        enter(manager, "bob")
        XCTAssertLessThan(Date().timeIntervalSince(started), 0.5, "bob waited on alice's lock")
        guard case .failed(_, let reason) = manager.open(user: user("alice")) else { return XCTFail("alice's second login waits for her first") }
        XCTAssertTrue(reason.containsLiteral("locked by another process"), reason)
        XCTAssertNotNil(alicesLogin)
        alicesLogin = nil
        enter(manager, "alice")
        XCTAssertGreaterThan(host.shieldedCalls, 0, "logins run shielded from the user's signals")
    }

    func testGCLeavesARootWhoseUserIsLoggingInOrOut() throws {
        let manager = makeManager()
        let session = enter(manager, "alice")
        host.deadPids.insert(Int32(session.reference.split(separator: " ")[1].split(separator: ".")[0])!)
        var held: FileLock? = try state.lock(user: user("alice"), timeoutSeconds: 0)
        let report = try manager.gc()
        XCTAssertTrue(report.actions.contains("root alice: a login or logout of its user is running; left for the next gc"), "\(report)")
        XCTAssertNotNil(try state.load(alice), "the dead root is left while its user's lock is held")
        XCTAssertNotNil(held)
        held = nil
        XCTAssertTrue(try manager.gc().actions.contains("root alice: destroyed"), "the control: free, it goes")
    }

    func testGCReportsUnreadableRecordsAndLeavesTheirRootsAlone() throws {
        let manager = makeManager()
        XCTAssertTrue(FileManager.default.createFile(atPath: joinPath(state.rootsDir, "zed"), contents: Data("garbage".utf8)))
        XCTAssertTrue(FileManager.default.createFile(atPath: state.pinPath(RootKey("zed")!), contents: nil))
        backend.snapshots = [RootKey("zed")!, RootKey("ghost")!]
        let zedCgroup = "/user.slice/loginchroot-\(tag)-zed-0", otherInstance = "/user.slice/loginchroot-0000beef-ghost-0"
        host.leftover = [zedCgroup, otherInstance, "/user.slice/loginchroot-\(tag)-ghost-0"]
        let report = try manager.gc()
        XCTAssertEqual(report.failures, ["state file \(joinPath(state.rootsDir, "zed")) is unreadable; its root is left alone; inspect and remove it"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: joinPath(state.rootsDir, "zed")), "never deleted by force")
        XCTAssertEqual(host.unpinned, [], "the pin of a corrupt record stays")
        XCTAssertEqual(backend.snapshots, [RootKey("zed")!], "its snapshot stays; one without any record goes (the control)")
        XCTAssertEqual(host.removedCgroups, ["/user.slice/loginchroot-\(tag)-ghost-0"],
                       "its cgroups and another instance's stay; this instance's leftover goes (the control)")
    }

    func testACorruptRecordRefusesItsUsersLoginWithTheReason() throws {
        let manager = makeManager()
        XCTAssertTrue(FileManager.default.createFile(atPath: joinPath(state.rootsDir, "alice"), contents: Data("garbage".utf8)))
        guard case .failed(_, let reason) = manager.open(user: user("alice")) else { return XCTFail("must be refused") }
        XCTAssertTrue(reason.containsLiteral("does not parse"), reason)
        XCTAssertEqual(backend.calls.filter { $0.hasPrefix("prepare") }, [], "no second root over a quarantined one")
    }

    func testAJoinChecksTheRootsUid() throws {
        let manager = makeManager()
        enter(manager, "alice")
        host.accounts["alice"]!.uid = 2000  // the name now belongs to another account
        guard case .failed(_, let reason) = manager.open(user: user("alice")) else { return XCTFail("must be refused") }
        XCTAssertTrue(reason.containsLiteral("belongs to uid 1000"), reason)
    }

    func testNumbersFromAnotherBootOrWithoutTheirPinAreNotScannedFor() throws {
        for breakIt in ["boot", "pin"] {
            let manager = makeManager()
            let session = enter(manager, "alice")
            if breakIt == "boot" { host.boot = "boot-2" } else { host.pins = [:] }
            host.killCalls = []
            XCTAssertEqual(manager.close(user: user("alice"), reference: session.reference, hostNamespace: session.fd),
                           .closed(destroyed: true))
            XCTAssertEqual(host.killCalls.last?.identity, RootIdentity(namespaceInode: 0, rootMount: 0), breakIt)
            host.boot = "boot-1"
        }
        // The control: with this boot's id and the pin in place, the numbers are used.
        let manager = makeManager()
        let session = enter(manager, "alice")
        XCTAssertEqual(manager.close(user: user("alice"), reference: session.reference, hostNamespace: session.fd),
                       .closed(destroyed: true))
        XCTAssertNotEqual(host.killCalls.last?.identity?.namespaceInode, 0)
    }

    func testGCCollectsGenerations() throws {
        let manager = makeManager { $0.keepGenerations = 2 }
        backend.allGenerations = (1...6).map(Generation.init(number:))
        backend.current = Generation(number: 2)
        enter(manager, "bob")                  // uses gen-2, will be dead at gc time
        backend.current = Generation(number: 3)
        enter(manager, "alice")                // uses gen-3, alive
        backend.current = Generation(number: 4)
        backend.temporaries = ["gen-7.tmp"]
        host.deadPids = [1000]                 // bob's session

        let report = try manager.gc()
        XCTAssertEqual(backend.removedGenerations.map(\.number), [1, 2],
                       "gen-3 is in use, gen-4 is current, gen-5 and gen-6 are the newest two")
        XCTAssertEqual(backend.allGenerations.map(\.number), [3, 4, 5, 6])
        XCTAssertTrue(report.actions.contains("root bob: destroyed"), "\(report)")
        XCTAssertTrue(report.actions.contains("generation gen-7.tmp: removed unfinished publish"), "\(report)")
        XCTAssertTrue(report.actions.contains("generation gen-1: removed"), "\(report)")
        XCTAssertTrue(report.actions.contains("generation gen-2: removed"), "\(report)")
    }

    func testGCRemovesGenerationsOpenRootsNoLongerNeed() throws {
        let manager = makeManager { $0.keepGenerations = 1 }
        backend.rootsOutliveTheirGeneration = true  // dm-thin, btrfs
        backend.allGenerations = (1...3).map(Generation.init(number:))
        enter(manager, "alice")                // gen-1, alive
        backend.current = Generation(number: 3)
        _ = try manager.gc()
        XCTAssertEqual(backend.removedGenerations.map(\.number), [1, 2])
        XCTAssertEqual(try manager.records().map(\.key.value), ["alice"], "the open root is untouched")
    }

    func testGCKeepsGenerationsOfQuarantinedRoots() throws {
        let manager = makeManager { $0.keepGenerations = 1 }
        backend.allGenerations = (1...3).map(Generation.init(number:))
        let session = enter(manager)           // gen-1
        backend.current = Generation(number: 3)
        host.killSucceeds = false
        _ = manager.close(user: user("alice"), reference: session.reference, hostNamespace: session.fd)
        _ = try manager.gc()
        XCTAssertEqual(backend.removedGenerations.map(\.number), [2], "a quarantined root may still use gen-1")
    }

    func testCollectGenerationsWithoutCurrent() throws {
        let manager = makeManager { $0.keepGenerations = 2 }
        backend.allGenerations = (1...5).map(Generation.init(number:))
        backend.current = nil
        let removed = try manager.collectGenerations(inUse: [Generation(number: 2)])
        XCTAssertEqual(removed, ["generation gen-1: removed", "generation gen-3: removed"])
        XCTAssertEqual(backend.allGenerations.map(\.number), [2, 4, 5])
    }
}

extension SessionManager {
    /// What close_session does (Sources/PamModule/Entry.swift): back to the
    /// host through the fd open handed over, then close there.
    func close(user: UserName, reference: String?, hostNamespace: Int32) -> CloseOutcome {
        guard let reference else { return .nothingToDo(reason: "this PAM handle opened no root") }
        do { try namespaces.returnToHost(hostNamespace) } catch { return .deferred(reason: "\(error)") }
        return close(reference: reference)
    }
}
