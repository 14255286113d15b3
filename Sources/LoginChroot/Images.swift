// master and its generations: the image workflow of init, master run,
// update and publish. Every writer of master or of the generations holds
// master.lock, taken here (gc takes it too, never waiting for it).
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public struct Images {
    public let config: Config
    public let backend: SnapshotBackend
    let log: (String) -> Void

    public init(config: Config, log: @escaping (String) -> Void) {
        self.config = config
        backend = Backends.make(config)
        self.log = log
    }

    /// Makes the store and master, has `fill` fill master (it gets master's
    /// path, mounted in this process's own namespace), and publishes the
    /// first generation. Nothing is made before the programs it needs are
    /// found. A master that a failed init left is emptied first; a fill
    /// that fails empties it again, so the same init can run once the cause
    /// is fixed.
    public func initialize(alsoRequiring extra: [RequiredProgram], fill: (String) throws -> Void) throws -> Generation {
        try RequiredPrograms.require(RequiredPrograms.forStore(backend) + extra)
        let state = try StateStore(directory: config.stateDir)
        let lock = try state.masterLock()
        defer { withExtendedLifetime(lock) {} }
        try backend.createStore()
        try backend.bringOnline()
        try backend.createMaster()
        // master is filled in a namespace of this thread's own; the
        // generation is published from the host's (an erofs one is mounted there).
        try Roots.returningToThisNamespace {
            let master = try ImageLabels.mountPrivately(try backend.masterLayout(), state: state, log: log)
            // A fresh ext4 has lost+found: that is still an empty master.
            if try !Files.listDirectory(master).allSatisfy({ $0 == "lost+found" }) {
                guard try backend.generations().isEmpty else {
                    throw SetupError("the store is already initialised", fix: "use 'loginchroot update' or 'loginchroot master run'")
                }
                log("master holds what a failed init left; emptying it first")
                try Images.empty(master)
            }
            do { try fill(master) } catch {
                let emptied: String
                do {
                    try Images.empty(master)
                    emptied = "master was emptied: run the same 'loginchroot init' again once the cause is fixed"
                } catch let emptying {
                    emptied = "emptying master failed (\(emptying)); the same 'loginchroot init' empties it first when run again"
                }
                throw SetupError("\(error)", fix: emptied)
            }
            try ImageLabels.labelMaster(backend, state: state, mountedAt: master, log: log)
        }
        return try backend.publish()
    }

    /// Runs `command` as root inside master, this process moved into it in
    /// a namespace of its own (the mounts vanish with the process), and
    /// returns its exit status. With SELinux on, master is labelled after
    /// (a package manager in master sees SELinux as off), unless
    /// `lockHeldByCaller`: update publishes next, and labels then.
    public func run(inMaster command: [String], lockHeldByCaller: Bool) throws -> Int32 {
        try backend.checkStore()
        let state = try StateStore(directory: config.stateDir)
        let lock = lockHeldByCaller ? nil : try state.masterLock()
        defer { withExtendedLifetime(lock) {} }
        if !lockHeldByCaller { try catchMasterUpWithTheFleet(state: state) }
        let layout = try backend.masterLayout()
        let plan = RootPlan.master(rootMounts: layout.mounts, rootSubpath: layout.rootSubpath)
        let status = try Roots.returningToThisNamespace {
            let host = try Namespaces.openCurrentMountNamespace()
            _ = try Roots.build(plan, staging: state.stagingDir, pin: nil, host: host, log: log)
            _ = Roots.enterHome(plan.home)
            return try Processes.run(command)
        }
        if !lockHeldByCaller && SELinux.isEnabled() { try ImageLabels.labelMaster(backend, state: state, log: log) }
        return status
    }

    /// Runs `change` (which changes master, from a child process: master
    /// run moves its own process into master) and publishes, under one
    /// master.lock: no other writer gets in between. `change` returns an
    /// exit status; nothing is published unless it is 0.
    public func update(_ change: () throws -> Int32) throws -> Generation {
        try backend.checkStore()
        let state = try StateStore(directory: config.stateDir)
        let lock = try state.masterLock()
        defer { withExtendedLifetime(lock) {} }
        try catchMasterUpWithTheFleet(state: state)
        let status = try change()
        guard status == 0 else {
            throw SetupError("update command failed with exit status \(status); nothing published",
                             fix: "see its output above, fix the cause, and run 'loginchroot update' again")
        }
        return try ImageLabels.publish(backend, state: state, log: log)
    }

    /// Fetches the fleet's newest commit (under the fleet lock only: the
    /// network may take minutes) and, unless it is the current generation
    /// already, publishes it under master.lock: checked out straight into
    /// the next generation where the backend can (hardlinked to the
    /// repository's objects for a directory lower and as erofs's input, a
    /// subvolume of copies on btrfs), else through master (dm-thin). A
    /// failed fetch changes nothing; a failure after it leaves the
    /// generations as they were. Open sessions keep theirs.
    public func update(pulling pull: FleetPull) throws -> FleetPull.Outcome {
        try backend.checkStore()
        let state = try StateStore(directory: config.stateDir)
        let fleetLock = try state.fleetLock()
        defer { withExtendedLifetime(fleetLock) {} }
        let commit = try pull.fetch(log: log)
        let lock = try state.masterLock()
        defer { withExtendedLifetime(lock) {} }
        let deployment = pull.deployment
        let current = try? backend.currentGeneration()
        if let current, try deployment.isDeployed(commit, as: current) { return .upToDate(commit: commit, generation: current) }
        let generation: Generation
        if let published = try ImageLabels.publish(backend, tree: { directory, hardlinked in
            try deployment.checkout(commit, into: directory, hardlinked: hardlinked)
            CrashPoint.reached("pull.checked-out")
        }) {
            generation = published
        } else {
            try fillMaster(with: commit, of: deployment, state: state)
            generation = try ImageLabels.publish(backend, state: state, log: log)
        }
        try deployment.recordDeployed(commit, as: generation)
        try deployment.pruneHistory()
        return .published(commit: commit, generation: generation)
    }

    /// On a login machine a pull publishes its commit without master, which
    /// falls behind: before master is changed or published here, it is
    /// filled with the deployed commit, so that a change made here starts
    /// from the fleet's image, not from an older one. The caller holds
    /// master.lock.
    private func catchMasterUpWithTheFleet(state: StateStore) throws {
        let deployment = FleetDeployment(storePath: config.storePath)
        guard let commit = try deployment.commitMasterLacks() else { return }
        log("master is filled with the fleet's commit \(commit) first (the image 'update --pull' published)")
        try fillMaster(with: commit, of: deployment, state: state)
    }

    /// Empties master and copies `commit` into it.
    private func fillMaster(with commit: String, of deployment: FleetDeployment, state: StateStore) throws {
        try Roots.returningToThisNamespace {
            let master = try ImageLabels.mountPrivately(try backend.masterLayout(), state: state, log: log)
            try Images.empty(master)
            CrashPoint.reached("pull.master-emptied")
            try deployment.checkout(commit, into: master, hardlinked: false)
        }
        try deployment.recordMaster(commit)
    }

    /// Publishes master as the new current generation (labelled first when
    /// SELinux is on). Open sessions keep theirs. With `export`, the build
    /// host's, the generation is then committed to the fleet's repository,
    /// under the same master.lock; returns the commit too.
    public func publish(export: FleetExport? = nil) throws -> (generation: Generation, commit: String?) {
        try backend.checkStore()
        let state = try StateStore(directory: config.stateDir)
        let lock = try state.masterLock()
        defer { withExtendedLifetime(lock) {} }
        try catchMasterUpWithTheFleet(state: state)
        let generation = try ImageLabels.publish(backend, state: state, log: log)
        guard let export else { return (generation, nil) }
        do {
            return (generation, try export.export(generation, of: backend, state: state, log: log))
        } catch {
            throw SetupError("\(generation) is published here but not exported: \(error)",
                             fix: "once the cause is fixed, run 'loginchroot publish --export \(export.repository.path)' again "
                                  + "(it exports a new generation of the same master)")
        }
    }

    private static func empty(_ master: String) throws {
        let directory = try Descriptor.openDirectory(master)
        for name in try Files.listDirectory(master) where name != "lost+found" {
            try Files.removeTree(parent: directory, name: name)
        }
    }
}
