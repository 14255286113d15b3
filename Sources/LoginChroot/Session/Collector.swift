// end and gc: reclaiming roots whose sessions are gone, and what no root
// uses any more (snapshots, pins and cgroups without a record, old
// generations). The same teardown as a logout's.
import LoginChrootCore
import LoginChrootPlatform

extension SessionManager {
    /// Ends root `key` as the logout of all its sessions would.
    public func end(_ key: RootKey) throws -> Bool {
        let state = try StateStore(directory: config.stateDir)
        let lock = try lockUser(of: key, state, timeoutSeconds: config.lockTimeoutSeconds)
        defer { withExtendedLifetime(lock) {} }
        guard var record = try state.load(key) else { return false }
        guard teardown(&record, state) else { throw SetupError("root \(key) is quarantined: \(record.note)", fix: "see 'loginchroot status'") }
        return true
    }

    public struct GCReport: Equatable {
        public var actions: [String] = []
        public var failures: [String] = []
    }

    /// Reconciles records, snapshots, pins and cgroups, and collects unused
    /// generations. Safe at boot and at any time: it acts on a root only
    /// while it holds its user's lock, never waits for one (a root whose
    /// user is logging in or out is left for the next run), and only
    /// removes what no live session uses.
    public func gc() throws -> GCReport {
        var report = GCReport()
        let state = try StateStore(directory: config.stateDir)

        // An unreadable record is quarantined: its root, pin and cgroups are
        // left alone, since nothing says whether its sessions still live.
        let scan = try state.scan()
        for bad in scan.unreadable {
            report.failures.append("state file \(joinPath(state.rootsDir, bad)) is unreadable; its root is left alone; inspect and remove it")
        }
        let quarantined = Set(scan.unreadable)
        /// Runs `body` for root `key` under its user's lock, if that is free.
        func whileLocked(_ key: RootKey, _ body: () throws -> Void) rethrows {
            guard let lock = try? lockUser(of: key, state, timeoutSeconds: 0) else {
                report.actions.append("root \(key): a login or logout of its user is running; left for the next gc")
                return
            }
            defer { withExtendedLifetime(lock) {} }
            try body()
        }
        for key in scan.records.map(\.key) {
            whileLocked(key) {
                do {
                    // Read again under the lock: a logout may have changed it.
                    guard var record = try state.load(key) else { return }
                    let before = record.members.count
                    try dropDeadMembers(of: &record, state)
                    if record.members.count != before {
                        report.actions.append("root \(key): dropped \(before - record.members.count) dead session(s)")
                    }
                    if record.phase == .active && !record.members.isEmpty {
                        try state.save(record)  // still in use: leave it alone
                    } else if teardown(&record, state) {
                        report.actions.append("root \(key): destroyed")
                    } else {
                        report.failures.append("root \(key): \(record.note)")
                    }
                } catch {
                    report.failures.append("root \(key): \(error)")
                }
            }
        }
        // Leftovers without a record, each under its user's lock and
        // checked again there: a login may be making that root right now.
        func orphan(_ key: RootKey) -> Bool { !quarantined.contains(key.value) && !state.exists(key) }
        let snapshots: [RootKey]
        do { snapshots = try backend.rootSnapshots() } catch {
            snapshots = []
            report.failures.append("snapshots: cannot list them: \(error)")
        }
        for key in snapshots where orphan(key) {
            whileLocked(key) {
                guard orphan(key) else { return }
                do {
                    try reaper.retryWhileBusy { try backend.remove(key) }
                    report.actions.append("snapshot \(key): removed (no record)")
                } catch { report.failures.append("snapshot \(key): removing the snapshot: \(error)") }
            }
        }
        for key in try state.pinnedKeys().compactMap(RootKey.init) where orphan(key) {
            whileLocked(key) {
                guard orphan(key) else { return }
                do {
                    try namespaces.unpin(state.pinPath(key))
                    report.actions.append("namespace pin \(key): removed (no record)")
                } catch { report.failures.append("namespace pin \(key): \(error)") }
            }
        }
        // A cgroup no session of its root has: its root is gone, or the login
        // that made it died before it recorded the session.
        func stray(_ cgroup: String, of key: RootKey) throws -> Bool {
            guard let record = try state.load(key) else { return true }
            return !record.members.contains { $0.cgroup == cgroup }
        }
        for cgroup in reaper.leftoverCgroups(prefix: cgroupPrefix) {
            guard let key = rootKey(ofCgroup: cgroup), !quarantined.contains(key.value),
                  (try? stray(cgroup, of: key)) == true else { continue }  // an unreadable record keeps its cgroups
            whileLocked(key) {
                guard (try? stray(cgroup, of: key)) == true else { return }
                _ = reaper.killAll(cgroups: [cgroup], identity: nil, timeoutSeconds: config.killTimeoutSeconds)
                reaper.removeCgroup(cgroup)
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
        if !backend.rootsOutliveTheirGeneration && !quarantined.isEmpty {
            report.actions.append("generations: skipped, an unreadable record may use any of them")
            return report
        }
        do {
            for name in try backend.finishInterruptedPublishes() {
                report.actions.append("generation \(name): removed unfinished publish")
            }
            let inUse = backend.rootsOutliveTheirGeneration ? [] : Set(try state.scan().records.map(\.generation))
            report.actions += try collectGenerations(inUse: inUse)
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
        let current = try? backend.currentGeneration()  // none yet: every generation is old but the newest
        let newest = Set(all.suffix(config.keepGenerations))
        var removed: [String] = []
        for generation in all where generation != current && !newest.contains(generation) && !inUse.contains(generation) {
            try backend.removeGeneration(generation)
            CrashPoint.reached("gc.generation-removed")
            removed.append("generation \(generation): removed")
        }
        return removed
    }

    /// Every record that parses (status, stop). An unreadable state
    /// directory throws.
    public func records() throws -> [RootRecord] { try StateStore(directory: config.stateDir).scan().records }
}
