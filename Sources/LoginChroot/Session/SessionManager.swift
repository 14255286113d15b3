// Opening, joining, closing and reclaiming session roots. All decisions are
// here; all effects go through SessionHost and SnapshotBackend. Every change
// of a user's roots happens under that user's lock (never a lock all users
// share: one user's stopped login delays nobody else's), shielded from the
// user's signals, and the record is saved before each step that touches the
// system, so a crash at any point leaves a record that gc (or the next
// login) can finish.
import LoginChrootCore
import LoginChrootPlatform  // CrashPoint only

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
    let host: SessionHost
    let state: StateStore
    let log: (String) -> Void

    public init(config: Config, backend: SnapshotBackend, host: SessionHost, log: @escaping (String) -> Void) {
        self.config = config
        self.backend = backend
        self.host = host
        self.state = StateStore(directory: config.stateDir)
        self.log = log
    }

    // MARK: open

    public func open(user name: UserName, caller kind: SessionCaller = .login) -> OpenOutcome {
        let account: Account
        do {
            guard let found = try host.lookupAccount(name) else {
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
            try host.prepareStateDirectory(state, timeoutSeconds: config.lockTimeoutSeconds, forPins: true)
            outcome = try host.shielded {
                let lock = try state.lock(user: account.name, timeoutSeconds: config.lockTimeoutSeconds)
                defer { withExtendedLifetime(lock) {} }
                return try openLocked(account, kind)
            }
        } catch {
            return .failed(userMessage: "Your session root could not be prepared; please contact the administrator.",
                           reason: "opening a root for \(name): \(error)")
        }
        // Outside the lock: a home on a hung NFS server may block here, and
        // must not block the user's other logins with it.
        if case .entered = outcome { host.enterHome(account.home) }
        return outcome
    }

    private func openLocked(_ account: Account, _ kind: SessionCaller) throws -> OpenOutcome {
        let caller = host.caller()
        guard caller.startTime != 0 else {
            // Without it a live session could later be taken for a dead one.
            throw SetupError("cannot read the start time of process \(caller.pid)", fix: "check that /proc is mounted")
        }
        let key = try rootKey(for: account, caller: caller.pid)
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
        let placement = try host.placeCaller(inCgroupNamed: "\(cgroupPrefix)\(key)-\(serial)")
        CrashPoint.reached("open.placed-in-cgroup")
        do {
            try backend.checkStore()
            if var existing = record, existing.phase == .active {
                // A root whose sessions all died without close_session is not
                // joined: the new login gets a fresh root of the current generation.
                try dropDeadMembers(of: &existing)
                record = existing
            }
            if let existing = record, existing.phase != .active {
                // Left by a crash (an open holds the lock, so nobody is working on it).
                log("root \(key) was left in phase \(existing.phase.rawValue); tearing it down first")
                var leftover = existing
                guard teardown(&leftover) else {
                    throw SetupError("the previous root of \(account.name) could not be cleaned up (\(leftover.note))",
                                     fix: "run 'loginchroot gc' as root")
                }
                record = nil
            }
            // The user manager's cgroup stays systemd's (see below).
            let ownCgroup = kind == .login
            let member = Member(id: "\(caller.pid).\(caller.startTime).\(serial)", pid: caller.pid,
                                startTime: caller.startTime, cgroup: ownCgroup ? placement.cgroup : "",
                                parentCgroup: ownCgroup ? placement.parent : "")
            let hostNamespace = try host.openHostNamespace()
            do {
                if var existing = record {
                    existing.members.append(member)
                    existing.nextMember = serial &+ 1
                    _ = try existing.apply(.memberJoined)
                    try state.save(existing)
                    CrashPoint.reached("open.member-recorded")
                    do {
                        try backend.confineSession()
                        try host.joinRoot(pin: state.pinPath(key))
                    } catch {
                        existing.members.removeAll { $0.id == member.id }
                        try? state.save(existing)
                        throw error
                    }
                    log("user \(account.name) joined root \(key) (generation \(existing.generation), \(existing.members.count) sessions)")
                } else {
                    do {
                        try create(key: key, account: account, member: member, serial: serial, hostNamespace: hostNamespace)
                    } catch where !state.exists(key)
                        && backend.awaitReclaimedSpace(after: error, seconds: Self.reclaimWaitSeconds) {
                        // Rolled back cleanly, and the store has freed space since.
                        log("opening root \(key) ran out of space (\(error)); retrying after the store reclaimed removed roots")
                        try create(key: key, account: account, member: member, serial: serial, hostNamespace: hostNamespace)
                    }
                }
            } catch {
                host.closeDescriptor(hostNamespace)
                throw error
            }
            // The user manager goes back to its unit's cgroup, delegated to
            // the user: there it makes the cgroups of the user's services,
            // and systemd kills what is left when it stops the unit.
            if !ownCgroup { returnCaller(from: placement.cgroup, to: placement.parent) }
            return .entered(reference: "\(key) \(member.id)", hostNamespace: hostNamespace)
        } catch {
            returnCaller(from: placement.cgroup, to: placement.parent)
            throw error
        }
    }

    private func create(key: RootKey, account: Account, member: Member, serial: UInt64, hostNamespace: Int32) throws {
        // Shared with other logins; gc removes no generation meanwhile.
        let generationsLock = try state.generationsLock(exclusive: false)
        defer { withExtendedLifetime(generationsLock) {} }
        let generation = try backend.currentGeneration()
        var record = try RootRecord.opening(key: key, user: account.name, uid: account.uid, backend: backend.kind,
                                            generation: generation)
        record.members = [member]
        record.nextMember = serial &+ 1  // later members' cgroups never take this one's name
        record.bootID = host.bootID()
        try state.save(record)
        CrashPoint.reached("open.record-saved")
        do {
            let layout = try backend.prepare(key, from: generation)
            CrashPoint.reached("open.snapshot-made")
            let plan = SessionPlan.make(key: key, account: account, config: config, rootMounts: layout.mounts,
                                        rootSubpath: layout.rootSubpath)
            let identity = try host.buildRoot(plan, staging: state.stagingDir, pin: state.pinPath(key))
            CrashPoint.reached("open.root-built")
            record.namespaceInode = identity.namespaceInode
            record.rootMount = identity.rootMount
            record.rootDevice = identity.rootDevice
            record.filesystemDevice = identity.filesystemDevice
            record.mappedDevice = identity.mappedDevice
            _ = try record.apply(.prepared)
            try state.save(record)
            CrashPoint.reached("open.root-active")
            try backend.confineSession()
            try host.joinRoot(pin: state.pinPath(key))
            CrashPoint.reached("open.joined")
            log("user \(account.name) entered new root \(key) (\(backend.kind.rawValue), generation \(generation))")
        } catch {
            // Out of the root first (if we got in), or the snapshot stays busy.
            try? host.returnToHost(hostNamespace)
            record.members = []
            record.note = "setup failed: \(error)"
            if !teardown(&record) { log("could not roll back root \(key): \(record.note)") }
            throw error
        }
    }

    private func rootKey(for account: Account, caller: Int32) throws -> RootKey {
        switch config.mode {
        case .perUser:
            return .perUser(account.name)
        case .perSession:
            var serial = UInt64(caller)
            while state.exists(.perSession(account.name, serial: serial)) { serial += 1 << 32 }
            return .perSession(account.name, serial: serial)
        }
    }

    private func returnCaller(from cgroup: String, to parent: String) {
        _ = host.moveCaller(toCgroup: parent)  // it logs a failure
        host.removeCgroup(cgroup)
    }

    // MARK: close

    /// Step one of close_session, before any host file (the config, the
    /// state) is read: moves the calling thread back to the host namespace
    /// saved at open. Returns why the close has to be left to gc, or nil.
    public static func leaveRoot(host: SessionHost, hostNamespace: Int32) -> String? {
        guard host.isRoot() else {
            return "close_session without root privileges; 'loginchroot gc' will reclaim the root"
        }
        guard hostNamespace >= 0 else {
            return "close_session without the host namespace saved at open; 'loginchroot gc' will reclaim the root"
        }
        do { try host.returnToHost(hostNamespace) } catch {
            return "cannot leave the session namespace (\(error)); 'loginchroot gc' will reclaim the root"
        }
        CrashPoint.reached("close.on-host")
        return nil
    }

    /// Step two, on the host: `reference` is what open handed over through
    /// pam_set_data ("KEY MEMBER-ID").
    public func close(reference: String) -> CloseOutcome {
        let parts = reference.split(separator: " ").map(String.init)
        guard parts.count == 2, let key = RootKey(parts[0]) else {
            return .nothingToDo(reason: "unusable session reference '\(reference)'")
        }
        do {
            return try host.shielded {
                let lock = try lockUser(of: key, timeoutSeconds: config.lockTimeoutSeconds)
                defer { withExtendedLifetime(lock) {} }
                guard var record = try state.load(key) else { return .nothingToDo(reason: "root \(key) is already gone") }
                var waitingIn: Member?
                defer { if let member = waitingIn { returnCaller(from: member.cgroup, to: member.parentCgroup) } }
                if let member = record.members.first(where: { $0.id == parts[1] }) {
                    if try leave(member, of: &record, callerInside: true) { waitingIn = member }
                    CrashPoint.reached("close.member-killed")
                }
                try dropDeadMembers(of: &record)
                guard record.phase != .active else {
                    try state.save(record)
                    return .closed(destroyed: false)
                }
                if teardown(&record) { return .closed(destroyed: true) }
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
        if callerInside && !host.moveCaller(toCgroup: member.parentCgroup) {
            log("could not move out of \(member.cgroup); its processes are killed one by one, sparing this one")
        }
        var waiting = false
        if !member.cgroup.isEmpty {
            if !host.killAll(cgroups: [member.cgroup], identity: nil, timeoutSeconds: config.killTimeoutSeconds) {
                log("processes of session \(member.id) in \(record.key) survived the kill; the root teardown will retry")
            }
            waiting = callerInside && host.userControls(cgroup: member.parentCgroup)
                && host.moveCaller(toCgroup: member.cgroup)
            if !waiting { host.removeCgroup(member.cgroup) }
        }
        record.members.removeAll { $0.id == member.id }
        if record.phase == .active { _ = try record.apply(.memberLeft(remaining: record.members.count)) }
        return waiting
    }

    private func dropDeadMembers(of record: inout RootRecord) throws {
        for member in record.members where !host.isAlive(member) {
            log("session \(member.id) of root \(record.key) is gone without close_session; reclaiming it")
            try leave(member, of: &record, callerInside: false)
        }
    }

    /// Kills everything in the root, unpins its namespace and destroys the
    /// snapshot. On failure the record is quarantined with the reason.
    @discardableResult
    func teardown(_ record: inout RootRecord) -> Bool {
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
        let identity = trustedIdentity(of: record)
        var failure: String?
        if !host.killAll(cgroups: cgroups, identity: identity, timeoutSeconds: config.killTimeoutSeconds) {
            failure = "processes survived SIGKILL for \(config.killTimeoutSeconds)s"
        }
        CrashPoint.reached("teardown.processes-killed")
        if failure == nil {
            do {
                try host.unpin(state.pinPath(record.key))
                // The namespace and the root's mount id are gone now;
                // the kernel may hand them to the next login. Forget them
                // before anything else can fail, so no later retry kills
                // whoever got them.
                record.namespaceInode = 0
                record.rootMount = 0
                record.rootDevice = 0
                record.filesystemDevice = 0
                record.mappedDevice = 0
                try state.save(record)
                CrashPoint.reached("teardown.unpinned")
            } catch { failure = "unpinning the namespace: \(error)" }
        }
        if failure == nil {
            failure = removeSnapshot(record.key)
            CrashPoint.reached("teardown.snapshot-removed")
        }
        if let failure {
            record.note = failure
            do {
                _ = try record.apply(.teardownFailed(reason: failure))
                try state.save(record)
            } catch {
                log("root \(record.key): recording the quarantine failed: \(error)")
            }
            log("root \(record.key) quarantined: \(failure)")
            return false
        }
        cgroups.forEach(host.removeCgroup)
        do {
            _ = try record.apply(.destroyed)
            try state.delete(record.key)
        } catch { log("removing record of \(record.key): \(error)") }
        log("root \(record.key) destroyed")
        return true
    }

    /// The recorded namespace inode and root mount id, if they still name this
    /// root: recorded in this boot, and the pin still holds that namespace
    /// (the pin keeps the inode from being reused, and the root's mount
    /// with it). Otherwise the numbers may now belong to a stranger, and
    /// only the cgroups are trusted.
    func trustedIdentity(of record: RootRecord) -> RootIdentity {
        let none = RootIdentity(namespaceInode: 0, rootMount: 0)
        guard record.namespaceInode != 0 || record.rootMount != 0 else { return none }
        guard record.bootID == host.bootID() else {
            log("root \(record.key): its record is from another boot; not scanning for its namespace or mount")
            return none
        }
        guard host.pinnedNamespace(at: state.pinPath(record.key)) == record.namespaceInode else {
            log("root \(record.key): its namespace pin is gone or holds another namespace; killing by cgroup only")
            return none
        }
        return RootIdentity(namespaceInode: record.namespaceInode, rootMount: record.rootMount, rootDevice: record.rootDevice,
                            filesystemDevice: record.filesystemDevice, mappedDevice: record.mappedDevice, owner: record.uid)
    }

    /// Names of this instance's cgroups start with this (Config.instanceTag).
    var cgroupPrefix: String { "loginchroot-\(config.instanceTag)-" }

    /// The namespace's mounts are released as its last user goes; a delete
    /// right after may still see them busy for a moment.
    private func removeSnapshot(_ key: RootKey) -> String? {
        var last = ""
        for attempt in 0..<20 {
            do {
                try backend.remove(key)
                return nil
            } catch {
                last = "\(error)"
                host.pause(milliseconds: 10 * (attempt + 1))
            }
        }
        return "removing the snapshot: \(last)"
    }

    // MARK: end and gc

    /// Ends root `key` as the logout of all its sessions would.
    public func end(_ key: RootKey) throws -> Bool {
        try host.prepareStateDirectory(state, timeoutSeconds: config.lockTimeoutSeconds, forPins: false)
        let lock = try lockUser(of: key, timeoutSeconds: config.lockTimeoutSeconds)
        defer { withExtendedLifetime(lock) {} }
        guard var record = try state.load(key) else { return false }
        guard teardown(&record) else { throw SetupError("root \(key) is quarantined: \(record.note)", fix: "see 'loginchroot status'") }
        return true
    }

    public struct GCReport: Equatable {
        public var actions: [String] = []
        public var failures: [String] = []
    }

    /// The lock of the user whose root `key` is.
    private func lockUser(of key: RootKey, timeoutSeconds: Int?) throws -> FileLock {
        guard let user = key.userName else { throw SetupError("root \(key) names no user", fix: "inspect the state directory") }
        return try state.lock(user: user, timeoutSeconds: timeoutSeconds)
    }

    /// Reconciles records, snapshots, pins and cgroups, and collects unused
    /// generations. Safe at boot and at any time: it acts on a root only
    /// while it holds its user's lock, never waits for one (a root whose
    /// user is logging in or out is left for the next run), and only
    /// removes what no live session uses.
    public func gc() throws -> GCReport {
        var report = GCReport()
        try host.prepareStateDirectory(state, timeoutSeconds: config.lockTimeoutSeconds, forPins: false)

        // An unreadable record is quarantined: its root, pin and cgroups are
        // left alone, since nothing says whether its sessions still live.
        let unreadable = state.unreadableRecords()
        for bad in unreadable {
            report.failures.append("state file \(joinPath(state.rootsDir, bad)) is unreadable; its root is left alone; inspect and remove it")
        }
        let quarantined = Set(unreadable)
        /// Runs `body` for root `key` under its user's lock, if that is free.
        func whileLocked(_ key: RootKey, _ body: () throws -> Void) rethrows {
            guard let lock = try? lockUser(of: key, timeoutSeconds: 0) else {
                report.actions.append("root \(key): a login or logout of its user is running; left for the next gc")
                return
            }
            defer { withExtendedLifetime(lock) {} }
            try body()
        }
        for key in state.recordKeys() where !quarantined.contains(key.value) {
            try whileLocked(key) {
                guard var record = try? state.load(key) else { return }
                let before = record.members.count
                try dropDeadMembers(of: &record)
                if record.members.count != before {
                    report.actions.append("root \(key): dropped \(before - record.members.count) dead session(s)")
                }
                if record.phase == .active && !record.members.isEmpty {
                    try state.save(record)  // still in use: leave it alone
                } else if teardown(&record) {
                    report.actions.append("root \(key): destroyed")
                } else {
                    report.failures.append("root \(key): \(record.note)")
                }
            }
        }
        // Leftovers without a record, each under its user's lock and
        // checked again there: a login may be making that root right now.
        func orphan(_ key: RootKey) -> Bool { !quarantined.contains(key.value) && !state.exists(key) }
        for key in (try? backend.sessions()) ?? [] where orphan(key) {
            whileLocked(key) {
                guard orphan(key) else { return }
                if let failure = removeSnapshot(key) { report.failures.append("snapshot \(key): \(failure)") } else {
                    report.actions.append("snapshot \(key): removed (no record)")
                }
            }
        }
        for key in state.pinnedKeys().compactMap(RootKey.init) where orphan(key) {
            whileLocked(key) {
                guard orphan(key) else { return }
                do {
                    try host.unpin(state.pinPath(key))
                    report.actions.append("namespace pin \(key): removed (no record)")
                } catch { report.failures.append("namespace pin \(key): \(error)") }
            }
        }
        // A cgroup no session of its root has: its root is gone, or the login
        // that made it died before it recorded the session.
        func stray(_ cgroup: String, of key: RootKey) -> Bool {
            guard let record = try? state.load(key) else { return !state.exists(key) }
            return !record.members.contains { $0.cgroup == cgroup }
        }
        for cgroup in host.leftoverCgroups(prefix: cgroupPrefix) {
            guard let key = rootKey(ofCgroup: cgroup), !quarantined.contains(key.value), stray(cgroup, of: key) else { continue }
            whileLocked(key) {
                guard stray(cgroup, of: key) else { return }
                _ = host.killAll(cgroups: [cgroup], identity: nil, timeoutSeconds: config.killTimeoutSeconds)
                host.removeCgroup(cgroup)
                report.actions.append("cgroup \(cgroup): removed (no session)")
            }
        }
        // Generations only when no publish or update holds master.lock and
        // no login is snapshotting one: gc never waits for either.
        guard let masterLock = try? state.masterLock(wait: false) else {
            report.actions.append("generations: skipped, a publish or update is running")
            return report
        }
        defer { withExtendedLifetime(masterLock) {} }
        guard let generationsLock = try? state.generationsLock(exclusive: true) else {
            report.actions.append("generations: skipped, a login is snapshotting one")
            return report
        }
        defer { withExtendedLifetime(generationsLock) {} }
        if !backend.sessionsOutliveTheirGeneration && !quarantined.isEmpty {
            report.actions.append("generations: skipped, an unreadable record may use any of them")
            return report
        }
        do {
            for name in try backend.removeTemporaries() { report.actions.append("generation \(name): removed unfinished publish") }
            report.actions += try collectGenerations(
                inUse: backend.sessionsOutliveTheirGeneration ? [] : Set(state.loadAll().map(\.generation)))
        } catch {
            report.failures.append("generations: \(error)")
        }
        return report
    }

    /// The root a cgroup of this instance belongs to ("PREFIX" KEY "-" SERIAL).
    func rootKey(ofCgroup cgroup: String) -> RootKey? {
        guard let name = cgroup.split(separator: "/").last.map(String.init), name.hasPrefix(cgroupPrefix),
              let dash = name.lastIndex(of: "-") else { return nil }
        return RootKey(String(name[name.index(name.startIndex, offsetBy: cgroupPrefix.count)..<dash]))
    }

    /// Keeps the current generation, the newest `keep_generations`, and the
    /// generations in `inUse` (those open roots still stand on).
    func collectGenerations(inUse: Set<Generation>) throws -> [String] {
        let all = try backend.generations()
        let current = try? backend.currentGeneration()
        let newest = Set(all.suffix(config.keepGenerations))
        var removed: [String] = []
        for generation in all where generation != current && !newest.contains(generation) && !inUse.contains(generation) {
            try backend.removeGeneration(generation)
            CrashPoint.reached("gc.generation-removed")
            removed.append("generation \(generation): removed")
        }
        return removed
    }

    public func records() -> [RootRecord] { state.loadAll() }
}
