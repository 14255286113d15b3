// Who gets a session root. Pure: the caller looks the account up.

/// One group of an account, as the host's NSS gives it.
public struct GroupEntry: Equatable, Sendable {
    public var name: String
    public var gid: UInt32
    public init(name: String, gid: UInt32) { self.name = name; self.gid = gid }
}

/// The account facts the policy and the plan need, looked up by the platform.
public struct Account: Equatable, Sendable {
    public var name: UserName
    public var uid: UInt32
    public var gid: UInt32
    public var home: String
    public var shell: String
    /// The full passwd line, as NSS returned it, for the root's /etc/passwd.
    public var passwdLine: String
    /// The user's groups on the host, primary first: exactly the gids a
    /// session inside the root may have.
    public var groups: [GroupEntry]
    public var groupNames: [String] { groups.map(\.name) }

    public init(name: UserName, uid: UInt32, gid: UInt32, home: String, shell: String, passwdLine: String, groups: [GroupEntry]) {
        self.name = name; self.uid = uid; self.gid = gid; self.home = home
        self.shell = shell; self.passwdLine = passwdLine; self.groups = groups
    }
}

/// Who opens the session: a login, or systemd's user manager
/// (user@UID.service, PAM service "systemd-user"). The manager's cgroup is
/// its unit's, which systemd delegated to the user and stops: the module
/// gives it no cgroup of its own past open_session.
public enum SessionCaller: Equatable, Sendable {
    case login
    case userManager

    public init(pamService: String?) { self = pamService == "systemd-user" ? .userManager : .login }
}

public enum PolicyDecision: Equatable, Sendable {
    case enterRoot
    /// The module has nothing to do (PAM_IGNORE).
    case leaveAlone(reason: String)
    case refuse(reason: String)
}

/// What the module writes into every root at /run/loginchroot-session: the
/// root's key, then its owner's uid. Its presence is how a login from inside
/// a root is recognised.
public struct RootMarker: Equatable, Sendable {
    public static let path = "/run/loginchroot-session"
    public var key: RootKey
    public var uid: UInt32

    public init(key: RootKey, uid: UInt32) { self.key = key; self.uid = uid }

    public func serialized() -> String { "\(key)\nuid=\(uid)\n" }

    public static func parse(_ text: String) -> RootMarker? {
        let lines = text.split(separator: "\n").map(String.init)
        guard lines.count == 2, let key = RootKey(lines[0]), lines[1].hasPrefix("uid="),
              let uid = UInt32(lines[1].dropFirst(4)) else { return nil }
        return RootMarker(key: key, uid: uid)
    }
}

public enum Policy {
    public static func decide(account: Account, config: Config) -> PolicyDecision {
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
        return .enterRoot
    }

    /// A login from inside a root (the image's own PAM stack has the
    /// module): roots never nest, and only the root's owner may log in
    /// there. Anyone else, root included, would run in the owner's root,
    /// untracked, with whatever the owner planted in it.
    /// `markerText` is nil when the marker is unreadable or absent.
    public static func decideInside(markerText: String?, user: UserName, uid: UInt32?) -> PolicyDecision {
        guard let markerText, let marker = RootMarker.parse(markerText) else {
            return .refuse(reason: "inside a session root whose marker \(RootMarker.path) cannot be read")
        }
        guard let uid else {
            return .refuse(reason: "user \(user) is unknown inside root \(marker.key)")
        }
        guard uid == marker.uid else {
            return .refuse(reason: "user \(user) (uid \(uid)) may not log in inside root \(marker.key) of uid \(marker.uid)")
        }
        return .leaveAlone(reason: "already inside their own root \(marker.key); roots never nest")
    }
}
