// Who gets a session root. Pure: the caller looks the account up.

/// The account facts the policy and the plan need, looked up by the platform.
public struct Account: Equatable, Sendable {
    public var name: UserName
    public var uid: UInt32
    public var gid: UInt32
    public var home: String
    public var shell: String
    /// The full passwd line, as NSS returned it, for the root's /etc/passwd.
    public var passwdLine: String
    /// Names of the user's groups, primary first.
    public var groupNames: [String]

    public init(name: UserName, uid: UInt32, gid: UInt32, home: String, shell: String, passwdLine: String, groupNames: [String]) {
        self.name = name; self.uid = uid; self.gid = gid; self.home = home
        self.shell = shell; self.passwdLine = passwdLine; self.groupNames = groupNames
    }
}

public enum PolicyDecision: Equatable, Sendable {
    case enterRoot
    case leaveAlone(reason: String)
}

public enum Policy {
    public static func decide(account: Account, config: Config, insideSessionRoot: Bool) -> PolicyDecision {
        // uid 0 is always exempt, whatever the list says: an admin must be
        // able to log in and repair a machine whose image is broken.
        if account.uid == 0 {
            return .leaveAlone(reason: "uid 0 is always exempt")
        }
        if config.exemptUsers.contains(account.name.value) {
            return .leaveAlone(reason: "user \(account.name) is exempt")
        }
        if let group = account.groupNames.first(where: config.exemptGroups.contains) {
            return .leaveAlone(reason: "group \(group) is exempt")
        }
        if insideSessionRoot {
            return .leaveAlone(reason: "already inside a session root; roots never nest")
        }
        return .enterRoot
    }
}
