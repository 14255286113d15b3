// What a session root looks like, decided before anything is touched.
// The platform layer executes a plan; it makes no decisions of its own.

/// One mount a backend asks for, containerd-style: backends describe mounts,
/// one executor performs them. Relative paths are below the staging directory.
public enum MountSpec: Equatable, Sendable {
    case bind(source: String, target: String)
    case tmpfs(target: String, sizeBytes: UInt64)
    case directory(String)
    case overlay(lower: String, upper: String, work: String, target: String)
    /// A block device's filesystem (a dm-thin volume).
    case device(source: String, type: String, options: String, target: String)
}

/// A file written into the root, resolved inside it (never through its symlinks).
public enum RootFileEdit: Equatable, Sendable {
    /// Copy a host file over the root's file of the same path.
    case copyFromHost(String)
    /// Add `line` to a colon-separated database unless an entry named `name` is there.
    case ensureEntry(file: String, name: String, line: String)
    /// Add the user to group `name`'s member list, creating the group line if missing.
    case ensureGroupMember(group: String, gid: UInt32?, user: String)
}

public struct SessionPlan: Equatable, Sendable {
    public var key: RootKey
    public var rootMounts: [MountSpec]
    /// Where the finished root is, relative to the staging directory.
    public var rootSubpath: String
    public var binds: [BindEntry]
    public var edits: [RootFileEdit]
    /// Written last; its presence inside a root is how nesting is detected.
    public var markerPath: String
    public var home: String
    /// The login shell, which must exist in the finished root ("" = no check).
    public var shell: String

    public static let markerPath = "/run/loginchroot-session"

    public static func make(key: RootKey, account: Account, config: Config,
                            rootMounts: [MountSpec], rootSubpath: String,
                            groupIDs: [String: UInt32]) -> SessionPlan {
        var edits: [RootFileEdit] = config.copyFiles.map { .copyFromHost($0) }
        if config.addUserEntries {
            edits.append(.ensureEntry(file: "/etc/passwd", name: account.name.value, line: account.passwdLine))
            for group in account.groupNames {
                edits.append(.ensureGroupMember(group: group, gid: groupIDs[group], user: account.name.value))
            }
        }
        return SessionPlan(
            key: key, rootMounts: rootMounts, rootSubpath: rootSubpath,
            binds: config.binds.map { $0.resolved(uid: account.uid) },
            edits: edits, markerPath: markerPath, home: account.home,
            shell: account.shell.isEmpty ? "/bin/sh" : account.shell)  // passwd(5): empty means /bin/sh
    }

    /// The plan for `loginchroot master run`: master's own mounts, the
    /// package-manager binds, the host's resolver, and no user identity.
    public static func master(rootMounts: [MountSpec], rootSubpath: String) -> SessionPlan {
        SessionPlan(key: RootKey("master")!, rootMounts: rootMounts, rootSubpath: rootSubpath,
                    binds: Config.masterBinds, edits: [.copyFromHost("/etc/resolv.conf")],
                    markerPath: "", home: "/root", shell: "")
    }
}

/// Appends `line` to a colon-separated database text unless `name` has an entry.
public func ensuringEntry(in text: String, name: String, line: String) -> String? {
    if text.split(separator: "\n").contains(where: { $0.split(separator: ":", maxSplits: 1).first.map(String.init) == name }) {
        return nil
    }
    return (text.isEmpty || text.hasSuffix("\n") ? text : text + "\n") + line + "\n"
}

/// Adds `user` to `group` in /etc/group text; adds the group line when missing
/// and `gid` is known. Returns nil when nothing changes.
public func ensuringGroupMember(in text: String, group: String, gid: UInt32?, user: String) -> String? {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    for (index, line) in lines.enumerated() {
        var fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 4, fields[0] == group else { continue }
        let members = fields[3].split(separator: ",").map(String.init)
        if members.contains(user) { return nil }
        fields[3] = (members + [user]).joined(separator: ",")
        lines[index] = fields.joined(separator: ":")
        return lines.joined(separator: "\n") + "\n"
    }
    guard let gid else { return nil }
    lines.append("\(group):x:\(gid):\(user)")
    return lines.joined(separator: "\n") + "\n"
}
