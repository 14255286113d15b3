import XCTest
@testable import LoginChrootCore
import LoginChrootTestSupport

final class RootPlanTests: XCTestCase {
    let mounts: [MountSpec] = [.directory("upper"), .overlay(lower: "/store/gen-1", upper: "upper/u", work: "upper/w", target: "root")]

    func testBindsGetTheUid() {
        var config = Config()
        config.binds = [BindEntry(source: "/run/user/%u", optional: true), BindEntry(source: "/srv/%u", target: "/data/%u", readOnly: true)]
        let plan = RootPlan.make(key: .perUser(user("alice")), account: testAccount(uid: 4321), config: config,
                                    rootMounts: mounts, rootSubpath: "root")
        XCTAssertEqual(plan.binds, [BindEntry(source: "/run/user/4321", optional: true),
                                    BindEntry(source: "/srv/4321", target: "/data/4321", readOnly: true)])
    }

    func testDefaultBindsResolved() {
        let plan = RootPlan.make(key: .perUser(user("alice")), account: testAccount(), config: Config(),
                                    rootMounts: mounts, rootSubpath: "root")
        XCTAssertEqual(plan.binds.count, Config.defaultBinds.count)
        XCTAssertFalse(plan.binds.contains { $0.source.hasPrefix("/run/user") },
                       "the host's runtime directory holds the user's host-side services: never bound by default")
        XCTAssertEqual(plan.runtimeDirectory, RuntimeDirectory(path: "/run/user/1000", uid: 1000, gid: 1000, size: "10%"))
    }

    func testPlanCarriesKeyMountsHomeAndMarker() {
        let key = RootKey.perSession(user("alice"), serial: 9)
        let plan = RootPlan.make(key: key, account: testAccount(), config: Config(),
                                    rootMounts: mounts, rootSubpath: "root")
        XCTAssertEqual(plan.key, key)
        XCTAssertEqual(plan.rootMounts, mounts)
        XCTAssertEqual(plan.rootSubpath, "root")
        XCTAssertEqual(plan.home, "/home/alice")
        XCTAssertEqual(plan.marker, RootMarker(key: key, uid: 1000))
        XCTAssertTrue(plan.isSessionRoot)
        XCTAssertFalse(plan.nosuid, "setuid works by default (su, unix_chkpwd)")
    }

    func testThePlanNamesTheShellToCheckAndAnEmptyOneMeansBinSh() {
        var account = testAccount()
        let plan = { RootPlan.make(key: .perUser(user("alice")), account: account, config: Config(),
                                      rootMounts: self.mounts, rootSubpath: "root") }
        XCTAssertEqual(plan().shell, "/bin/bash")
        account.shell = ""
        XCTAssertEqual(plan().shell, "/bin/sh")
        XCTAssertEqual(RootPlan.master(rootMounts: mounts, rootSubpath: "root").shell, "", "master run checks no shell")
    }

    func testEditsWithUserEntries() {
        var config = Config()
        config.copyFiles = ["/etc/resolv.conf", "/etc/localtime"]
        let account = testAccount(groups: ["alice", "audio", "video"])
        let plan = RootPlan.make(key: .perUser(user("alice")), account: account, config: config,
                                    rootMounts: [], rootSubpath: "root")
        XCTAssertEqual(plan.edits, [
            .copyFromHost("/etc/resolv.conf"),
            .copyFromHost("/etc/localtime"),
            .replaceEntry(file: "/etc/passwd", name: "alice", line: account.passwdLine),
            .reconcileGroups(user: "alice", groups: account.groups),
        ])
    }

    func testEditsWithoutUserEntries() {
        var config = Config()
        config.addUserEntries = false
        config.copyFiles = ["/etc/hosts"]
        let plan = RootPlan.make(key: .perUser(user("alice")), account: testAccount(), config: config,
                                    rootMounts: [], rootSubpath: "root")
        XCTAssertEqual(plan.edits, [.copyFromHost("/etc/hosts")])
    }

    func testNoCopyFiles() {
        var config = Config()
        config.copyFiles = []
        config.addUserEntries = false
        let plan = RootPlan.make(key: .perUser(user("alice")), account: testAccount(), config: config,
                                    rootMounts: [], rootSubpath: "root")
        XCTAssertEqual(plan.edits, [])
    }

    func testMasterPlan() {
        let plan = RootPlan.master(rootMounts: mounts, rootSubpath: "master")
        XCTAssertEqual(plan.key.value, "master")
        XCTAssertEqual(plan.binds, Config.masterBinds)
        XCTAssertFalse(plan.binds.contains { $0.source == "/home" || $0.source == "/tmp" }, "no user data in master")
        XCTAssertEqual(plan.edits, [.copyFromHost("/etc/resolv.conf")])
        XCTAssertNil(plan.marker, "master must not look like a session root")
        XCTAssertNil(plan.runtimeDirectory)
        XCTAssertFalse(plan.isSessionRoot, "package managers may need device nodes in master")
    }

    // MARK: replacingEntry

    func testReplacingEntryKeepsTheSameLine() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n"
        XCTAssertNil(replacingEntry(in: passwd, name: "alice", line: "alice:x:1000:1000::/home/alice:/bin/sh"))
    }

    func testReplacingEntryOverrulesTheImagesEntry() {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:4242:4242::/srv/alice:/bin/sh\nbob:x:1:1::/:/bin/sh\nalice:x:7:7::/:/bin/sh\n"
        XCTAssertEqual(replacingEntry(in: passwd, name: "alice", line: "alice:x:1000:1000::/home/alice:/bin/bash"),
                       "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\nbob:x:1:1::/:/bin/sh\n",
                       "the host's line takes the first one's place, and no second entry of the name is left")
    }

    func testReplacingEntryAppends() {
        let line = "alice:x:1000:1000::/home/alice:/bin/bash"
        XCTAssertEqual(replacingEntry(in: "root:x:0:0::/root:/bin/sh", name: "alice", line: line),
                       "root:x:0:0::/root:/bin/sh\n\(line)\n", "a missing trailing newline is added first")
        XCTAssertEqual(replacingEntry(in: "", name: "alice", line: line), "\(line)\n")
        XCTAssertEqual(replacingEntry(in: "xalice:x:1:1::/:/bin/sh\nal:x:2:2::/:/bin/sh\n", name: "alice", line: "alice:x"),
                       "xalice:x:1:1::/:/bin/sh\nal:x:2:2::/:/bin/sh\nalice:x\n", "whole names only")
    }

    // MARK: reconcilingGroups

    let hostGroups = [GroupEntry(name: "alice", gid: 1000), GroupEntry(name: "audio", gid: 63)]

    func testGroupsAlreadyRightGiveNil() {
        XCTAssertNil(reconcilingGroups(in: "root:x:0:\nalice:x:1000:alice\naudio:x:63:bob,alice\n", user: "alice", groups: hostGroups))
    }

    func testAGroupNameWithAnotherGidGetsTheHostsGid() {
        XCTAssertEqual(reconcilingGroups(in: "audio:x:29:bob\n", user: "alice", groups: hostGroups),
                       "audio:x:63:bob,alice\nalice:x:1000:alice\n")
    }

    func testTheUserIsStruckFromGroupsTheHostDoesNotGive() {
        XCTAssertEqual(reconcilingGroups(in: "wheel:x:10:alice,bob\nsudo:x:27:alice\nalicex:x:5:alicex\n", user: "alice", groups: []),
                       "wheel:x:10:bob\nsudo:x:27:\nalicex:x:5:alicex\n")
    }

    func testMalformedLinesAreKept() {
        XCTAssertEqual(reconcilingGroups(in: "# comment\nbroken\n", user: "alice", groups: [GroupEntry(name: "alice", gid: 1000)]),
                       "# comment\nbroken\nalice:x:1000:alice\n")
    }
}

final class PolicyTests: XCTestCase {
    func testOrdinaryUserEntersRoot() {
        XCTAssertEqual(Policy.decide(account: testAccount(), config: Config()), .enterRoot)
    }

    func testUidZeroIsAlwaysExempt() {
        let toor = testAccount("toor", uid: 0, groups: ["root"])
        guard case .leaveAlone = Policy.decide(account: toor, config: Config()) else {
            return XCTFail("uid 0 must be exempt by default")
        }
        var config = Config()
        config.exemptUsers = []
        guard case .leaveAlone = Policy.decide(account: toor, config: config) else {
            return XCTFail("uid 0 must stay exempt even when root is not listed, so an admin can repair a broken image")
        }
        // Only uid 0: a user merely named like an exempt user's group is not.
        XCTAssertEqual(Policy.decide(account: testAccount("rooty", uid: 1, groups: ["root"]), config: config), .enterRoot)
    }

    func testExemptUserAndGroup() {
        var config = Config()
        config.exemptUsers = ["root", "alice"]
        XCTAssertEqual(Policy.decide(account: testAccount(), config: config),
                       .leaveAlone(reason: "user alice is exempt"))
        config = Config()
        config.exemptGroups = ["wheel", "audio"]
        XCTAssertEqual(Policy.decide(account: testAccount(groups: ["alice", "audio"]), config: config),
                       .leaveAlone(reason: "group audio is exempt"))
    }

    func testInsideARootOnlyItsOwnerIsLeftAlone() {
        let marker = RootMarker(key: .perUser(user("alice")), uid: 1000).serialized()
        guard case .leaveAlone(let reason) = Policy.decideInside(markerText: marker, user: user("alice"), uid: 1000) else {
            return XCTFail("the owner's nested login stays in the root")
        }
        XCTAssertTrue(reason.containsLiteral("never nest"))
        for (name, uid) in [("bob", UInt32(1001)), ("root", 0)] {
            guard case .refuse = Policy.decideInside(markerText: marker, user: user(name), uid: uid) else {
                return XCTFail("\(name) must not get a session inside alice's root")
            }
        }
        guard case .refuse = Policy.decideInside(markerText: marker, user: user("ghost"), uid: nil),
              case .refuse = Policy.decideInside(markerText: nil, user: user("alice"), uid: 1000),
              case .refuse = Policy.decideInside(markerText: "alice\n", user: user("alice"), uid: 1000) else {
            return XCTFail("an unknown user or an unreadable marker is refused")
        }
    }

    func testMarkerRoundTrips() {
        let marker = RootMarker(key: .perSession(user("alice"), serial: 7), uid: 1000)
        XCTAssertEqual(RootMarker.parse(marker.serialized()), marker)
        XCTAssertNil(RootMarker.parse("alice\nuid=x\n"))
    }
}
