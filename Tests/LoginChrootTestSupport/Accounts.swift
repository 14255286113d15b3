// What both test targets make accounts and user names from.
import LoginChrootCore

public func user(_ name: String) -> UserName { UserName(name)! }

public func testAccount(_ name: String = "alice", uid: UInt32 = 1000, groups: [String] = ["alice", "audio"]) -> Account {
    Account(name: user(name), uid: uid, gid: uid, home: "/home/\(name)", shell: "/bin/bash",
            passwdLine: "\(name):x:\(uid):\(uid):\(name):/home/\(name):/bin/bash",
            groups: groups.enumerated().map { GroupEntry(name: $1, gid: $0 == 0 ? uid : 100 + UInt32($0)) })
}
