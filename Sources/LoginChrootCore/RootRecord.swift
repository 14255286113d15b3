// The record of one session root, kept under the state directory, and the
// state machine its phase follows. The record is written before every step
// that changes the system, so a crash always leaves a record that tells gc
// what to undo.

public enum RootPhase: String, Sendable, CaseIterable {
    /// Snapshot requested; namespace not finished. gc rolls it back.
    case preparing
    /// Namespace live, at least one member.
    case active
    /// Last member left; processes are being killed and the snapshot removed.
    case closing
    /// Teardown failed (a process would not die, a mount stayed busy);
    /// gc retries. Nothing is deleted by force.
    case quarantined
}

public enum RootEvent: Equatable, Sendable {
    case prepared
    case memberJoined
    case memberLeft(remaining: Int)
    case teardownFailed(reason: String)
    case teardownRetried
    case destroyed
}

public struct InvalidTransition: Error, Equatable, CustomStringConvertible {
    public var from: RootPhase?
    public var event: RootEvent
    public var description: String { "event \(event) is not allowed in phase \(from?.rawValue ?? "none")" }
}

/// The transition function. `nil` means "no record": the root does not exist.
public func transition(_ phase: RootPhase?, _ event: RootEvent) throws -> RootPhase? {
    switch (phase, event) {
    case (nil, .memberJoined): return .preparing
    case (.preparing, .prepared): return .active
    case (.preparing, .teardownFailed): return .quarantined
    case (.preparing, .destroyed): return nil
    case (.active, .memberJoined): return .active
    case (.active, .memberLeft(let remaining)): return remaining > 0 ? .active : .closing
    case (.closing, .destroyed): return nil
    case (.closing, .teardownFailed): return .quarantined
    case (.quarantined, .teardownRetried): return .closing
    case (.quarantined, .destroyed): return nil
    default: throw InvalidTransition(from: phase, event: event)
    }
}

/// One PAM session inside a root.
public struct Member: Equatable, Sendable {
    /// Unique within the root: "pid.starttime.serial".
    public var id: String
    /// The process that called pam_open_session, and its start time, so a
    /// recycled pid is never mistaken for a live login.
    public var pid: Int32
    public var startTime: UInt64
    /// The member's cgroup (relative to the cgroup2 mount) and the one the
    /// caller came from; empty when cgroup2 was not available.
    public var cgroup: String
    public var parentCgroup: String

    public init(id: String, pid: Int32, startTime: UInt64, cgroup: String, parentCgroup: String) {
        self.id = id; self.pid = pid; self.startTime = startTime; self.cgroup = cgroup; self.parentCgroup = parentCgroup
    }
}

public struct RootRecord: Equatable, Sendable {
    public var key: RootKey
    public var user: UserName
    public var uid: UInt32
    public var backend: BackendKind
    public var generation: Generation
    public var phase: RootPhase
    /// Inode of the session's mount namespace and id of its root mount, so
    /// the /proc scan can find every process that still uses the root.
    public var namespaceInode: UInt64 = 0
    public var rootMount: UInt64 = 0
    public var rootDevice: UInt64 = 0
    public var filesystemDevice: UInt64 = 0
    public var mappedDevice: UInt64 = 0
    /// The boot those numbers belong to: after a reboot they name nothing
    /// of ours (a state_dir that persists keeps the record, not the root).
    public var bootID = ""
    public var members: [Member] = []
    /// Serial of the next member: member ids and cgroup names never repeat
    /// within a root, even for one process that opens several sessions.
    public var nextMember: UInt64 = 0
    public var note = ""

    public init(key: RootKey, user: UserName, uid: UInt32, backend: BackendKind, generation: Generation, phase: RootPhase) {
        self.key = key; self.user = user; self.uid = uid; self.backend = backend
        self.generation = generation; self.phase = phase
    }

    /// Once the namespace is unpinned, the kernel may hand its inode and
    /// the root's mount and devices to the next login: no later retry may
    /// act on them.
    public mutating func forgetIdentity() {
        namespaceInode = 0
        rootMount = 0
        rootDevice = 0
        filesystemDevice = 0
        mappedDevice = 0
    }

    /// A new record, in the phase the state machine gives a first member.
    public static func opening(key: RootKey, user: UserName, uid: UInt32, backend: BackendKind,
                               generation: Generation) throws -> RootRecord {
        guard let phase = try transition(nil, .memberJoined) else { throw InvalidTransition(from: nil, event: .memberJoined) }
        return RootRecord(key: key, user: user, uid: uid, backend: backend, generation: generation, phase: phase)
    }

    public func serialized() -> String {
        var lines = [
            "version=1", "key=\(key)", "user=\(user)", "uid=\(uid)", "backend=\(backend.rawValue)",
            "generation=\(generation)", "phase=\(phase.rawValue)",
            "namespace_inode=\(namespaceInode)", "root_mount=\(rootMount)", "root_device=\(rootDevice)",
            "filesystem_device=\(filesystemDevice)", "mapped_device=\(mappedDevice)", "next_member=\(nextMember)",
        ]
        if !bootID.isEmpty { lines.append("boot_id=\(bootID)") }
        for member in members {
            lines.append("member=\(member.id) \(member.pid) \(member.startTime) \(member.cgroup.isEmpty ? "-" : member.cgroup) \(member.parentCgroup.isEmpty ? "-" : member.parentCgroup)")
        }
        if !note.isEmpty { lines.append("note=\(note.filter { $0 != "\n" })") }
        return lines.joined(separator: "\n") + "\n"
    }

    public static func parse(_ text: String) -> RootRecord? {
        var fields: [String: String] = [:]
        var members: [Member] = []
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { return nil }
            let name = String(line[..<equals]), value = String(line[line.index(after: equals)...])
            if name == "member" {
                let parts = value.words
                guard parts.count == 5, let pid = Int32(parts[1]), let start = UInt64(parts[2]) else { return nil }
                members.append(Member(id: parts[0], pid: pid, startTime: start,
                                      cgroup: parts[3] == "-" ? "" : parts[3],
                                      parentCgroup: parts[4] == "-" ? "" : parts[4]))
            } else {
                fields[name] = value
            }
        }
        guard fields["version"] == "1",
              let key = fields["key"].flatMap(RootKey.init), let user = fields["user"].flatMap(UserName.init),
              let uid = fields["uid"].flatMap({ UInt32($0) }),
              let backend = fields["backend"].flatMap(BackendKind.init(rawValue:)),
              let generation = fields["generation"].flatMap(Generation.init),
              let phase = fields["phase"].flatMap(RootPhase.init(rawValue:))
        else { return nil }
        var record = RootRecord(key: key, user: user, uid: uid, backend: backend, generation: generation, phase: phase)
        record.namespaceInode = fields["namespace_inode"].flatMap { UInt64($0) } ?? 0
        record.rootMount = fields["root_mount"].flatMap { UInt64($0) } ?? 0
        record.rootDevice = fields["root_device"].flatMap { UInt64($0) } ?? 0
        record.filesystemDevice = fields["filesystem_device"].flatMap { UInt64($0) } ?? 0
        record.mappedDevice = fields["mapped_device"].flatMap { UInt64($0) } ?? 0
        record.members = members
        record.nextMember = fields["next_member"].flatMap { UInt64($0) } ?? UInt64(members.count)
        record.note = fields["note"] ?? ""
        record.bootID = fields["boot_id"] ?? ""
        return record
    }

    /// Applies `event` through the state machine.
    public mutating func apply(_ event: RootEvent) throws -> Bool {
        guard let next = try transition(phase, event) else { return false }
        phase = next
        return true
    }
}
