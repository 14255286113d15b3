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
    /// Make `line` the only entry named `name` in a colon-separated database:
    /// the image's own entry for that name, if any, gives way to the host's.
    case replaceEntry(file: String, name: String, line: String)
    /// Make /etc/group give `user` exactly the host's groups: see reconcilingGroups.
    case reconcileGroups(user: String, groups: [GroupEntry])
}

/// A tmpfs that is the root's own /run/user/UID, owned by the user.
public struct RuntimeDirectory: Equatable, Sendable {
    public var path: String
    public var uid: UInt32
    public var gid: UInt32
    /// tmpfs's size= option: "10%" or a number of bytes.
    public var size: String
}

public struct RootPlan: Equatable, Sendable {
    public var key: RootKey
    public var rootMounts: [MountSpec]
    /// Where the finished root is, relative to the staging directory.
    public var rootSubpath: String
    /// With `setuid = no`: a session root is mounted nosuid as well.
    public var nosuid: Bool
    public var binds: [BindEntry]
    public var edits: [RootFileEdit]
    /// Written after the edits; nil for master.
    public var marker: RootMarker?
    /// A session root (it has a marker) is mounted nodev and noatime;
    /// master, which package managers write, is not.
    public var isSessionRoot: Bool { marker != nil }
    public var runtimeDirectory: RuntimeDirectory?
    public var home: String
    /// The login shell, which must exist in the finished root ("" = no check).
    public var shell: String

    public static func make(key: RootKey, account: Account, config: Config,
                            rootMounts: [MountSpec], rootSubpath: String) -> RootPlan {
        var edits: [RootFileEdit] = config.copyFiles.map { .copyFromHost($0) }
        if config.addUserEntries {
            edits.append(.replaceEntry(file: "/etc/passwd", name: account.name.value, line: account.passwdLine))
            edits.append(.reconcileGroups(user: account.name.value, groups: account.groups))
        }
        return RootPlan(
            key: key, rootMounts: rootMounts, rootSubpath: rootSubpath,
            nosuid: !config.allowSetuid,
            binds: config.binds.map { $0.resolved(uid: account.uid) },
            edits: edits, marker: RootMarker(key: key, uid: account.uid),
            runtimeDirectory: RuntimeDirectory(path: "/run/user/\(account.uid)", uid: account.uid, gid: account.gid,
                                               size: config.runtimeDirectorySize),
            home: account.home,
            shell: account.shell.isEmpty ? "/bin/sh" : account.shell)  // passwd(5): empty means /bin/sh
    }

    /// This plan on a machine with SELinux on (Config.selinuxBinds).
    public func withHostSELinux() -> RootPlan {
        var plan = self
        plan.binds += Config.selinuxBinds
        return plan
    }

    /// The plan for `loginchroot master run`: master's own mounts, the
    /// package-manager binds, the host's resolver, and no user identity.
    public static func master(rootMounts: [MountSpec], rootSubpath: String) -> RootPlan {
        RootPlan(key: RootKey("master")!, rootMounts: rootMounts, rootSubpath: rootSubpath,
                    nosuid: false,
                    binds: Config.masterBinds, edits: [.copyFromHost("/etc/resolv.conf")],
                    marker: nil, runtimeDirectory: nil, home: "/root", shell: "")
    }
}

/// Makes `line` the one entry named `name` in a colon-separated database
/// text (replacing the image's, appending when there is none). Returns nil
/// when nothing changes.
public func replacingEntry(in text: String, name: String, line: String) -> String? {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    let named = { (entry: String) in entry.split(separator: ":", maxSplits: 1).first.map(String.init) == name }
    if lines.filter(named) == [line] { return nil }
    guard let first = lines.firstIndex(where: named) else { return (lines + [line]).joined(separator: "\n") + "\n" }
    var result: [String] = []
    for (index, entry) in lines.enumerated() where !named(entry) || index == first {
        result.append(index == first ? line : entry)
    }
    return result.joined(separator: "\n") + "\n"
}

/// /etc/group text in which `user` has exactly the host's `groups`, by gid:
/// sshd computes supplementary groups inside the root, from this file.
/// - A group the host has keeps its name and gets the host's gid (an image
///   that gives the name another gid is overruled), with the user listed.
/// - The user is struck from every other group's member list, so the image
///   never grants a gid the host did not.
/// - Host groups the image lacks are appended.
/// Returns nil when nothing changes.
public func reconcilingGroups(in text: String, user: String, groups: [GroupEntry]) -> String? {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    var missing = groups
    var result: [String] = []
    for line in lines {
        var fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 4 else { result.append(line); continue }
        var members = fields[3].split(separator: ",").map(String.init)
        if let host = groups.first(where: { $0.name == fields[0] }) {
            missing.removeAll { $0.name == host.name }
            fields[2] = String(host.gid)
            if !members.contains(user) { members.append(user) }
        } else {
            members.removeAll { $0 == user }
        }
        fields[3] = members.joined(separator: ",")
        result.append(fields.joined(separator: ":"))
    }
    result += missing.map { "\($0.name):x:\($0.gid):\(user)" }
    return result == lines ? nil : result.joined(separator: "\n") + "\n"
}
