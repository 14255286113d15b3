import XCTest
@testable import LoginChrootCore

func testAccount(_ name: String = "alice", uid: UInt32 = 1000, groups: [String] = ["alice", "audio"]) -> Account {
    Account(name: user(name), uid: uid, gid: uid, home: "/home/\(name)", shell: "/bin/bash",
            passwdLine: "\(name):x:\(uid):\(uid):\(name):/home/\(name):/bin/bash", groupNames: groups)
}

final class SessionPlanTests: XCTestCase {
    let mounts: [MountSpec] = [.directory("upper"), .overlay(lower: "/store/gen-1", upper: "upper/u", work: "upper/w", target: "root")]

    func testBindsGetTheUid() {
        var config = Config()
        config.binds = [BindEntry(source: "/run/user/%u", optional: true), BindEntry(source: "/srv/%u", target: "/data/%u", readOnly: true)]
        let plan = SessionPlan.make(key: .perUser(user("alice")), account: testAccount(uid: 4321), config: config,
                                    rootMounts: mounts, rootSubpath: "root", groupIDs: [:])
        XCTAssertEqual(plan.binds, [BindEntry(source: "/run/user/4321", optional: true),
                                    BindEntry(source: "/srv/4321", target: "/data/4321", readOnly: true)])
    }

    func testDefaultBindsResolved() {
        let plan = SessionPlan.make(key: .perUser(user("alice")), account: testAccount(), config: Config(),
                                    rootMounts: mounts, rootSubpath: "root", groupIDs: [:])
        XCTAssertEqual(plan.binds.count, Config.defaultBinds.count)
        XCTAssertTrue(plan.binds.contains(BindEntry(source: "/run/user/1000", optional: true)))
        XCTAssertFalse(plan.binds.contains { $0.source.containsLiteral("%u") })
    }

    func testPlanCarriesKeyMountsHomeAndMarker() {
        let key = RootKey.perSession(user("alice"), serial: 9)
        let plan = SessionPlan.make(key: key, account: testAccount(), config: Config(),
                                    rootMounts: mounts, rootSubpath: "root", groupIDs: [:])
        XCTAssertEqual(plan.key, key)
        XCTAssertEqual(plan.rootMounts, mounts)
        XCTAssertEqual(plan.rootSubpath, "root")
        XCTAssertEqual(plan.home, "/home/alice")
        XCTAssertEqual(plan.markerPath, "/run/loginchroot-session")
        XCTAssertEqual(plan.markerPath, SessionPlan.markerPath)
    }

    func testThePlanNamesTheShellToCheckAndAnEmptyOneMeansBinSh() {
        var account = testAccount()
        let plan = { SessionPlan.make(key: .perUser(user("alice")), account: account, config: Config(),
                                      rootMounts: self.mounts, rootSubpath: "root", groupIDs: [:]) }
        XCTAssertEqual(plan().shell, "/bin/bash")
        account.shell = ""
        XCTAssertEqual(plan().shell, "/bin/sh")
        XCTAssertEqual(SessionPlan.master(rootMounts: mounts, rootSubpath: "root").shell, "", "master run checks no shell")
    }

    func testEditsWithUserEntries() {
        var config = Config()
        config.copyFiles = ["/etc/resolv.conf", "/etc/localtime"]
        let account = testAccount(groups: ["alice", "audio", "video"])
        let plan = SessionPlan.make(key: .perUser(user("alice")), account: account, config: config,
                                    rootMounts: [], rootSubpath: "root", groupIDs: ["alice": 1000, "audio": 29])
        XCTAssertEqual(plan.edits, [
            .copyFromHost("/etc/resolv.conf"),
            .copyFromHost("/etc/localtime"),
            .ensureEntry(file: "/etc/passwd", name: "alice", line: account.passwdLine),
            .ensureGroupMember(group: "alice", gid: 1000, user: "alice"),
            .ensureGroupMember(group: "audio", gid: 29, user: "alice"),
            .ensureGroupMember(group: "video", gid: nil, user: "alice"),
        ])
    }

    func testEditsWithoutUserEntries() {
        var config = Config()
        config.addUserEntries = false
        config.copyFiles = ["/etc/hosts"]
        let plan = SessionPlan.make(key: .perUser(user("alice")), account: testAccount(), config: config,
                                    rootMounts: [], rootSubpath: "root", groupIDs: ["alice": 1000])
        XCTAssertEqual(plan.edits, [.copyFromHost("/etc/hosts")])
    }

    func testNoCopyFiles() {
        var config = Config()
        config.copyFiles = []
        config.addUserEntries = false
        let plan = SessionPlan.make(key: .perUser(user("alice")), account: testAccount(), config: config,
                                    rootMounts: [], rootSubpath: "root", groupIDs: [:])
        XCTAssertEqual(plan.edits, [])
    }

    func testMasterPlan() {
        let plan = SessionPlan.master(rootMounts: mounts, rootSubpath: "master")
        XCTAssertEqual(plan.key.value, "master")
        XCTAssertEqual(plan.binds, Config.masterBinds)
        XCTAssertFalse(plan.binds.contains { $0.source == "/home" || $0.source == "/tmp" }, "no user data in master")
        XCTAssertEqual(plan.edits, [.copyFromHost("/etc/resolv.conf")])
        XCTAssertEqual(plan.markerPath, "", "master must not look like a session root")
    }

    // MARK: ensuringEntry

    func testEnsuringEntryExistingGivesNil() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n"
        XCTAssertNil(ensuringEntry(in: passwd, name: "alice", line: "alice:x:1000:1000::/home/alice:/bin/bash"))
        XCTAssertNil(ensuringEntry(in: passwd, name: "root", line: "root:x:0:0::/:/bin/sh"))
    }

    func testEnsuringEntryAppends() {
        let line = "alice:x:1000:1000::/home/alice:/bin/bash"
        XCTAssertEqual(ensuringEntry(in: "root:x:0:0::/root:/bin/sh\n", name: "alice", line: line),
                       "root:x:0:0::/root:/bin/sh\n\(line)\n")
        XCTAssertEqual(ensuringEntry(in: "root:x:0:0::/root:/bin/sh", name: "alice", line: line),
                       "root:x:0:0::/root:/bin/sh\n\(line)\n", "a missing trailing newline is added first")
        XCTAssertEqual(ensuringEntry(in: "", name: "alice", line: line), "\(line)\n")
    }

    func testEnsuringEntryMatchesWholeNameOnly() {
        let line = "al:x:1001:1001::/home/al:/bin/sh"
        let passwd = "alice:x:1000:1000::/home/alice:/bin/sh\n"
        XCTAssertEqual(ensuringEntry(in: passwd, name: "al", line: line), passwd + line + "\n", "a prefix is not a match")
        XCTAssertEqual(ensuringEntry(in: "xalice:x:1:1::/:/bin/sh\n", name: "alice", line: "alice:x"), "xalice:x:1:1::/:/bin/sh\nalice:x\n")
    }

    // MARK: ensuringGroupMember

    func testGroupMemberAlreadyThereGivesNil() {
        XCTAssertNil(ensuringGroupMember(in: "audio:x:29:bob,alice\n", group: "audio", gid: 29, user: "alice"))
    }

    func testGroupMemberAddedToExistingGroup() {
        let group = "root:x:0:\naudio:x:29:bob\nvideo:x:44:\n"
        XCTAssertEqual(ensuringGroupMember(in: group, group: "audio", gid: 29, user: "alice"),
                       "root:x:0:\naudio:x:29:bob,alice\nvideo:x:44:\n")
        XCTAssertEqual(ensuringGroupMember(in: group, group: "video", gid: nil, user: "alice"),
                       "root:x:0:\naudio:x:29:bob\nvideo:x:44:alice\n", "an empty member list gets the user alone")
        XCTAssertEqual(ensuringGroupMember(in: "audio:x:29:bob", group: "audio", gid: 29, user: "alice"),
                       "audio:x:29:bob,alice\n", "a trailing newline is added")
    }

    func testGroupMemberIsNotASubstringMatch() {
        XCTAssertEqual(ensuringGroupMember(in: "audio:x:29:alicex\n", group: "audio", gid: 29, user: "alice"),
                       "audio:x:29:alicex,alice\n")
    }

    func testGroupLineCreatedWhenGidKnown() {
        XCTAssertEqual(ensuringGroupMember(in: "root:x:0:\n", group: "alice", gid: 1000, user: "alice"),
                       "root:x:0:\nalice:x:1000:alice\n")
        XCTAssertEqual(ensuringGroupMember(in: "", group: "alice", gid: 1000, user: "alice"), "alice:x:1000:alice\n")
    }

    func testGroupMissingAndGidUnknownGivesNil() {
        XCTAssertNil(ensuringGroupMember(in: "root:x:0:\n", group: "ghosts", gid: nil, user: "alice"))
    }
}

final class PolicyTests: XCTestCase {
    func testOrdinaryUserEntersRoot() {
        XCTAssertEqual(Policy.decide(account: testAccount(), config: Config(), insideSessionRoot: false), .enterRoot)
    }

    func testUidZeroIsAlwaysExempt() {
        let toor = testAccount("toor", uid: 0, groups: ["root"])
        guard case .leaveAlone = Policy.decide(account: toor, config: Config(), insideSessionRoot: false) else {
            return XCTFail("uid 0 must be exempt by default")
        }
        var config = Config()
        config.exemptUsers = []
        guard case .leaveAlone = Policy.decide(account: toor, config: config, insideSessionRoot: false) else {
            return XCTFail("uid 0 must stay exempt even when root is not listed, so an admin can repair a broken image")
        }
        // Only uid 0: a user merely named like an exempt user's group is not.
        XCTAssertEqual(Policy.decide(account: testAccount("rooty", uid: 1, groups: ["root"]), config: config,
                                     insideSessionRoot: false), .enterRoot)
    }

    func testExemptUserAndGroup() {
        var config = Config()
        config.exemptUsers = ["root", "alice"]
        XCTAssertEqual(Policy.decide(account: testAccount(), config: config, insideSessionRoot: false),
                       .leaveAlone(reason: "user alice is exempt"))
        config = Config()
        config.exemptGroups = ["wheel", "audio"]
        XCTAssertEqual(Policy.decide(account: testAccount(groups: ["alice", "audio"]), config: config, insideSessionRoot: false),
                       .leaveAlone(reason: "group audio is exempt"))
    }

    func testNestingIsRefused() {
        guard case .leaveAlone(let reason) = Policy.decide(account: testAccount(), config: Config(), insideSessionRoot: true) else {
            return XCTFail("roots must never nest")
        }
        XCTAssertTrue(reason.containsLiteral("never nest"))
    }
}
