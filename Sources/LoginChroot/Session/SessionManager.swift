// Opening, joining, closing and reclaiming session roots. All decisions are
// here; the effects go through three objects: the StateStore (records and
// locks), RootNamespaces (building and entering roots) and the Reaper
// (cgroups, kills, waits), and the SnapshotBackend. Every change of a
// user's roots happens under that user's lock (never a lock all users
// share: one user's stopped login delays nobody else's), shielded from the
// user's signals, and the record is saved before each step that touches the
// system, so a crash at any point leaves a record that gc (or the next
// login) can finish.
import LoginChrootCore
import LoginChrootPlatform

public enum OpenOutcome: Equatable {
    /// The caller thread is inside the root. `reference` and `hostNamespace`
    /// go to close_session through pam_set_data.
    case entered(reference: String, hostNamespace: Int32)
    case leftAlone(reason: String)
    case failed(userMessage: String, reason: String)
}

public enum CloseOutcome: Equatable {
    case closed(destroyed: Bool)
    case nothingToDo(reason: String)
    /// Not everything could be done now; gc will finish it. Never fails PAM.
    case deferred(reason: String)
}

public final class SessionManager {
    /// How long a login out of space waits for the store to reclaim what
    /// earlier logouts removed (under the user's lock).
    static let reclaimWaitSeconds = 5
    public let config: Config
    let backend: SnapshotBackend
    let namespaces: RootNamespaces
    let reaper: Reaper
    let lookupAccount: (UserName) throws -> Account?
    let log: (String) -> Void

    public init(config: Config, backend: SnapshotBackend, namespaces: RootNamespaces, reaper: Reaper,
                lookupAccount: @escaping (UserName) throws -> Account? = Accounts.lookup,
                log: @escaping (String) -> Void) {
        self.config = config
        self.backend = backend
        self.namespaces = namespaces
        self.reaper = reaper
        self.lookupAccount = lookupAccount
        self.log = log
    }

    /// The manager of the real machine.
    public convenience init(config: Config, log: @escaping (String) -> Void) {
        self.init(config: config, backend: Backends.make(config),
                  namespaces: LinuxRootNamespaces(lockTimeoutSeconds: config.lockTimeoutSeconds, log: log),
                  reaper: CgroupReaper(log: log), log: log)
    }

    // MARK: open

    /// Decide, lock, save the intent, snapshot, build or join, mark active.
    public func open(user name: UserName, caller kind: SessionCaller = .login) -> OpenOutcome {
        let account: Account
        do {
            guard let found = try lookupAccount(name) else {
                return .failed(userMessage: "Unknown user.", reason: "user \(name) has no passwd entry")
            }
            account = found
        } catch {
            return .failed(userMessage: "Cannot look up your account.", reason: "looking up \(name): \(error)")
        }
        switch Policy.decide(account: account, config: config) {
        case .leaveAlone(let reason): return .leftAlone(reason: reason)
        case .refuse(let reason): return .failed(userMessage: "You cannot log in here.", reason: reason)
        case .enterRoot: break
        }
        let outcome: OpenOutcome
        do {
            let state = try StateStore(directory: config.stateDir)
            outcome = try reaper.shielded {
                let lock = try state.lock(user: account.name, timeoutSeconds: config.lockTimeoutSeconds)
                defer { withExtendedLifetime(lock) {} }
                return try openLocked(account, kind, state)
            }
        } catch {
            return .failed(userMessage: "Your session root could not be prepared; please contact the administrator.",
                           reason: "opening a root for \(name): \(error)")
        }
        // Outside the lock: a home on a hung NFS server may block here, and
        // must not block the user's other logins with it.
        if case .entered = outcome { namespaces.enterHome(account.home) }
        return outcome
    }

    private func openLocked(_ account: Account, _ kind: SessionCaller, _ state: StateStore) throws -> OpenOutcome {
        let caller = reaper.caller()
        guard caller.startTime != 0 else {
            // Without it a live session could later be taken for a dead one.
            throw SetupError("cannot read the start time of process \(caller.pid)", fix: "check that /proc is mounted")
        }
        let key = try rootKey(for: account, caller: caller.pid, state)
        var record = try state.load(key)
        if let existing = record, existing.uid != account.uid {
            // The name now belongs to another account (NSS changed): never
            // hand one account's root to another.
            throw SetupError("root \(key) belongs to uid \(existing.uid), not to \(account.name)'s uid \(account.uid)",
                             fix: "end it with 'loginchroot end \(account.name)'")
        }
        // Into a cgroup of its own before anything other users wait for (the
        // store check and a leftover's teardown take dm-thin's pool lock).
        // Without one a session's processes could only be found by the
        // /proc scan: the login fails (as on_error says) instead.
        let serial = record?.nextMember ?? 0
        let placement = try reaper.placeCaller(inCgroupNamed: "\(cgroupPrefix)\(key)-\(serial)")
        var passage = try RootPassage(namespaces: namespaces, reaper: reaper, placement: placement, log: log)
        CrashPoint.reached("open.placed-in-cgroup")
        try backend.checkOnline()
        if var existing = record, existing.phase == .active {
            // A root whose sessions all died without close_session is not
            // joined: the new login gets a fresh root of the current generation.
            try dropDeadMembers(of: &existing, state)
            record = existing
        }
        if var leftover = record, leftover.phase != .active {
            // Left by a crash (an open holds the lock, so nobody is working on it).
            log("root \(key) was left in phase \(leftover.phase.rawValue); tearing it down first")
            guard teardown(&leftover, state) else {
                throw SetupError("the previous root of \(account.name) could not be cleaned up (\(leftover.note))",
                                 fix: "run 'loginchroot gc' as root")
            }
            record = nil
        }
        // The user manager's cgroup stays systemd's (RootPassage.handOver).
        let ownCgroup = kind == .login
        let member = Member(id: "\(caller.pid).\(caller.startTime).\(serial)", pid: caller.pid,
                            startTime: caller.startTime, cgroup: ownCgroup ? placement.cgroup : "",
                            parentCgroup: ownCgroup ? placement.parent : "")
        if var existing = record {
            try join(&existing, member: member, serial: serial, passage: &passage, state)
        } else {
            do {
                try create(key, account, member: member, serial: serial, passage: &passage, state)
            } catch {
                // Rolled back cleanly; retried once the store has freed what
                // earlier logouts removed, if it has such work pending.
                guard !state.exists(key), backend.awaitReclaimedSpace(after: error, seconds: Self.reclaimWaitSeconds) else {
                    throw error
                }
                log("opening root \(key) ran out of space (\(error)); retrying after the store reclaimed removed roots")
                try create(key, account, member: member, serial: serial, passage: &passage, state)
            }
        }
        return .entered(reference: "\(key) \(member.id)", hostNamespace: passage.handOver(keepingCgroup: ownCgroup))
    }

    private func join(_ record: inout RootRecord, member: Member, serial: UInt64, passage: inout RootPassage,
                      _ state: StateStore) throws {
        record.members.append(member)
        record.nextMember = serial &+ 1
        _ = try record.apply(.memberJoined)
        try state.save(record)
        CrashPoint.reached("open.member-recorded")
        do {
            try backend.confineSession()
            try passage.join(pin: state.pinPath(record.key))
        } catch {
            record.members.removeAll { $0.id == member.id }
            do { try state.save(record) } catch { log("root \(record.key): forgetting the failed session: \(error)") }
            throw error
        }
        log("user \(record.user) joined root \(record.key) (generation \(record.generation), \(record.members.count) sessions)")
    }

    private func create(_ key: RootKey, _ account: Account, member: Member, serial: UInt64, passage: inout RootPassage,
                        _ state: StateStore) throws {
        // Shared with other logins; gc removes no generation meanwhile.
        let generationsLock = try state.generationsLock(exclusive: false)
        defer { withExtendedLifetime(generationsLock) {} }
        let generation = try backend.currentGeneration()
        var record = try RootRecord.opening(key: key, user: account.name, uid: account.uid, backend: backend.kind,
                                            generation: generation)
        record.members = [member]
        record.nextMember = serial &+ 1  // later members' cgroups never take this one's name
        record.bootID = namespaces.bootID
        try state.save(record)
        CrashPoint.reached("open.record-saved")
        do {
            let layout = try backend.prepare(key, from: generation)
            CrashPoint.reached("open.snapshot-made")
            let plan = RootPlan.make(key: key, account: account, config: config, rootMounts: layout.mounts,
                                        rootSubpath: layout.rootSubpath)
            let identity = try passage.build(plan, state: state)
            CrashPoint.reached("open.root-built")
            record.namespaceInode = identity.namespaceInode
            record.rootMount = identity.rootMount
            record.rootDevice = identity.rootDevice
            record.filesystemDevice = identity.filesystemDevice
            record.mappedDevice = identity.mappedDevice
            _ = try record.apply(.prepared)
            try state.save(record)  // from inside the root, through the store's directory fd
            CrashPoint.reached("open.root-active")
            try backend.confineSession()
            CrashPoint.reached("open.joined")
            log("user \(account.name) entered new root \(key) (\(backend.kind.rawValue), generation \(generation))")
        } catch {
            passage.leave()  // out of the root first, or the snapshot stays busy
            record.members = []
            record.note = "setup failed: \(error)"
            if !teardown(&record, state) { log("could not roll back root \(key): \(record.note)") }
            throw error
        }
    }

    private func rootKey(for account: Account, caller: Int32, _ state: StateStore) throws -> RootKey {
        switch config.mode {
        case .perUser:
            return .perUser(account.name)
        case .perSession:
            var serial = UInt64(caller)
            while state.exists(.perSession(account.name, serial: serial)) { serial += 1 << 32 }
            return .perSession(account.name, serial: serial)
        }
    }

    // MARK: close

    /// close_session, once the calling thread is back on the host
    /// (Roots.returnToHost with the fd open handed over): `reference` is
    /// what open handed over through pam_set_data ("KEY MEMBER-ID").
    public func close(reference: String) -> CloseOutcome {
        let parts = reference.split(separator: " ").map(String.init)
        guard parts.count == 2, let key = RootKey(parts[0]) else {
            return .nothingToDo(reason: "unusable session reference '\(reference)'")
        }
        do {
            let state = try StateStore(directory: config.stateDir)
            return try reaper.shielded {
                let lock = try lockUser(of: key, state, timeoutSeconds: config.lockTimeoutSeconds)
                defer { withExtendedLifetime(lock) {} }
                guard var record = try state.load(key) else { return .nothingToDo(reason: "root \(key) is already gone") }
                var waitingIn: Member?
                defer {
                    if let member = waitingIn {
                        reaper.returnCaller(CgroupPlacement(cgroup: member.cgroup, parent: member.parentCgroup))
                    }
                }
                if let member = record.members.first(where: { $0.id == parts[1] }) {
                    if try leave(member, of: &record, callerInside: true) { waitingIn = member }
                    CrashPoint.reached("close.member-killed")
                }
                try dropDeadMembers(of: &record, state)
                guard record.phase != .active else {
                    try state.save(record)
                    return .closed(destroyed: false)
                }
                if teardown(&record, state) { return .closed(destroyed: true) }
                return .deferred(reason: "root \(key) is quarantined: \(record.note)")
            }
        } catch {
            return .deferred(reason: "closing root \(key): \(error)")
        }
    }

    /// Kills one member's processes and forgets it. The caller (when it is
    /// the member's login process) steps out to its own cgroup for the kill.
    /// When a user controls that cgroup (su from a terminal under their
    /// systemd --user), they could freeze the caller there while it tears
    /// the root down, holding what other users wait for: it goes back into
    /// its emptied session cgroup until the close is done, and this returns
    /// true (the caller then returns it, and removes the cgroup).
    @discardableResult
    private func leave(_ member: Member, of record: inout RootRecord, callerInside: Bool) throws -> Bool {
        if callerInside && !reaper.moveCaller(toCgroup: member.parentCgroup) {
            log("could not move out of \(member.cgroup); its processes are killed one by one, sparing this one")
        }
        var waiting = false
        if !member.cgroup.isEmpty {
            if !reaper.killAll(cgroups: [member.cgroup], identity: nil, timeoutSeconds: config.killTimeoutSeconds) {
                log("processes of session \(member.id) in \(record.key) survived the kill; the root teardown will retry")
            }
            waiting = callerInside && reaper.userControls(cgroup: member.parentCgroup)
                && reaper.moveCaller(toCgroup: member.cgroup)
            if !waiting { reaper.removeCgroup(member.cgroup) }
        }
        record.members.removeAll { $0.id == member.id }
        if record.phase == .active { _ = try record.apply(.memberLeft(remaining: record.members.count)) }
        return waiting
    }

    func dropDeadMembers(of record: inout RootRecord, _ state: StateStore) throws {
        for member in record.members where !reaper.isAlive(member) {
            log("session \(member.id) of root \(record.key) is gone without close_session; reclaiming it")
            try leave(member, of: &record, callerInside: false)
        }
    }

    /// Kills everything in the root, unpins its namespace and destroys the
    /// snapshot. On failure the record is quarantined with the reason.
    @discardableResult
    func teardown(_ record: inout RootRecord, _ state: StateStore) -> Bool {
        do {
            switch record.phase {
            case .active: _ = try record.apply(.memberLeft(remaining: 0))
            case .quarantined: _ = try record.apply(.teardownRetried)
            case .preparing, .closing: break
            }
            try state.save(record)
        } catch {
            log("root \(record.key): \(error)")
        }
        CrashPoint.reached("teardown.closing-recorded")
        let cgroups = record.members.map(\.cgroup).filter { !$0.isEmpty }
        let identity = trustedIdentity(of: record, state)
        do {
            guard reaper.killAll(cgroups: cgroups, identity: identity, timeoutSeconds: config.killTimeoutSeconds) else {
                throw TeardownFailure("processes survived SIGKILL for \(config.killTimeoutSeconds)s")
            }
            CrashPoint.reached("teardown.processes-killed")
            do { try namespaces.unpin(state.pinPath(record.key)) } catch {
                throw TeardownFailure("unpinning the namespace: \(error)")
            }
            // The namespace and the root's mount id are gone now; the kernel
            // may hand them to the next login. Forget them before anything
            // else can fail, so no later retry kills whoever got them.
            record.forgetIdentity()
            do { try state.save(record) } catch { throw TeardownFailure("recording the unpin: \(error)") }
            CrashPoint.reached("teardown.unpinned")
            guard record.backend == backend.kind else {
                // Another backend's remove would miss the snapshot, or worse.
                throw TeardownFailure("its snapshot is on the \(record.backend.rawValue) backend, and the config now names \(backend.kind.rawValue); put the backend back and run 'loginchroot gc'")
            }
            do { try reaper.retryWhileBusy { try backend.remove(record.key) } } catch {
                throw TeardownFailure("removing the snapshot: \(error)")
            }
            CrashPoint.reached("teardown.snapshot-removed")
        } catch {
            let reason = (error as? TeardownFailure)?.reason ?? "\(error)"
            record.note = reason
            do {
                _ = try record.apply(.teardownFailed(reason: reason))
                try state.save(record)
            } catch {
                log("root \(record.key): recording the quarantine failed: \(error)")
            }
            log("root \(record.key) quarantined: \(reason)")
            return false
        }
        cgroups.forEach(reaper.removeCgroup)
        do {
            _ = try record.apply(.destroyed)
            try state.delete(record.key)
        } catch { log("removing record of \(record.key): \(error)") }
        log("root \(record.key) destroyed")
        return true
    }

    /// Why a teardown stopped, as the record's note says it.
    struct TeardownFailure: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    /// The recorded namespace inode and root mount id, if they still name this
    /// root: recorded in this boot, and the pin still holds that namespace
    /// (the pin keeps the inode from being reused, and the root's mount
    /// with it). Otherwise the numbers may now belong to a stranger, and
    /// only the cgroups are trusted.
    func trustedIdentity(of record: RootRecord, _ state: StateStore) -> RootIdentity {
        let none = RootIdentity(namespaceInode: 0, rootMount: 0)
        guard record.namespaceInode != 0 || record.rootMount != 0 else { return none }
        guard record.bootID == namespaces.bootID else {
            log("root \(record.key): its record is from another boot; not scanning for its namespace or mount")
            return none
        }
        guard namespaces.pinnedNamespace(at: state.pinPath(record.key)) == record.namespaceInode else {
            log("root \(record.key): its namespace pin is gone or holds another namespace; killing by cgroup only")
            return none
        }
        return RootIdentity(namespaceInode: record.namespaceInode, rootMount: record.rootMount, rootDevice: record.rootDevice,
                            filesystemDevice: record.filesystemDevice, mappedDevice: record.mappedDevice, owner: record.uid)
    }

    /// Names of this instance's cgroups start with this (Config.instanceTag).
    var cgroupPrefix: String { "loginchroot-\(config.instanceTag)-" }

    /// The lock of the user whose root `key` is.
    func lockUser(of key: RootKey, _ state: StateStore, timeoutSeconds: Int?) throws -> FileLock {
        guard let user = key.userName else { throw SetupError("root \(key) names no user", fix: "inspect the state directory") }
        return try state.lock(user: user, timeoutSeconds: timeoutSeconds)
    }
}
