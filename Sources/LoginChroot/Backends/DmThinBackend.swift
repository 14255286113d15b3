// dm-thin: master, generations and sessions are thin volumes of a pool this
// store owns, driven through libdevmapper (never lvm or dmsetup). A
// generation is a thin snapshot of master; a session is a thin snapshot of
// a generation, and outlives the generation's deletion.
//
// The store directory holds:
//   thin-metadata        which thin id is what, and the pool transaction id
//                        it matches (ThinMetadata; the protocol is there)
//   thin.lock            serialises every pool change
//   pool-data.img        loop files backing the pool, unless [dm-thin]
//   pool-metadata.img    names block devices
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public final class DmThinBackend: SnapshotBackend {
    public let kind = BackendKind.dmThin
    public let rootsOutliveTheirGeneration = true
    let config: Config
    let store: String

    var metadataFile: String { joinPath(store, "thin-metadata") }
    var lockFile: String { joinPath(store, "thin.lock") }
    var poolName: String { ThinNames.pool(config.poolName) }
    var dataDevice: String { config.dataDevice.isEmpty ? joinPath(store, "pool-data.img") : config.dataDevice }
    var metadataDevice: String { config.metadataDevice.isEmpty ? joinPath(store, "pool-metadata.img") : config.metadataDevice }
    var usesLoopFiles: Bool { config.dataDevice.isEmpty }

    public init(config: Config) {
        self.config = config
        store = config.storePath
        DeviceMapper.setUp()
    }

    // MARK: the pool

    public var requiredPrograms: [RequiredProgram] {
        [config.filesystem == .xfs ? RequiredProgram("mkfs.xfs", in: "xfsprogs") : RequiredProgram("mkfs.ext4", in: "e2fsprogs")]
    }

    public func checkKernel() throws {
        guard Files.exists("/dev/mapper/control") else {
            throw SetupError("no /dev/mapper/control: the kernel has no device-mapper", fix: "modprobe dm-thin-pool")
        }
    }

    public func takeOffline() throws -> String? { try deactivatePool() ? "thin pool deactivated" : nil }

    /// Activates the pool after boot if it is not active. Safe at any time.
    public func bringOnline() throws {
        guard Files.exists(metadataFile), try DeviceMapper.info(poolName) == nil else { return }
        let metadata = try loadMetadata()
        try activatePool(blockSectors: metadata.blockSectors)
    }

    /// Deactivates master and the generations (they stay active between
    /// logins), then the pool (its loop files then detach); false when the
    /// pool was not active. Nothing is removed deferred: a device in use
    /// fails the call and stays as it was.
    func deactivatePool() throws -> Bool {
        guard try DeviceMapper.info(poolName) != nil else { return false }
        let volumes = try loadMetadata().volumes.map { ThinNames.volume(config.poolName, $0.role) }
        for name in volumes + [poolName] where try DeviceMapper.info(name) != nil {
            do { try DeviceMapper.remove(name) } catch let error as SystemError where error.errno == EBUSY {
                throw SetupError("device \(name) is in use", fix: "end what holds it: \(whoHolds(name))")
            }
        }
        return true
    }

    /// `init`: the loop files, the pool, and the store's metadata.
    func createPool() throws {
        try Files.makeDirectories(store)
        _ = chmod(store, 0o700)
        if usesLoopFiles {
            if !Files.exists(dataDevice) { try Files.createSparse(dataDevice, size: config.dataSize) }
            if !Files.exists(metadataDevice) { try Files.createSparse(metadataDevice, size: config.metadataSize) }
        } else {
            try refuseLVMPoolParts()
        }
        try zeroMetadataSuperblock()  // the kernel formats a pool whose metadata starts with zeroes
        let blockSectors = config.thinBlockSize / 512
        try activatePool(blockSectors: blockSectors)
        let status = try poolStatus()
        var metadata = ThinMetadata(sectors: config.volumeSize / 512, blockSectors: blockSectors)
        metadata.transaction = status.transaction
        try save(metadata)
    }

    /// Never formats over a pool: its volumes may be all someone has. The
    /// device is closed again before the pool claims it.
    private func zeroMetadataSuperblock() throws {
        let device = try Descriptor.open(metadataDevice, O_RDWR | O_EXCL)
        var superblock = [UInt8](repeating: 0, count: 4096)
        guard pread(device.raw, &superblock, superblock.count, 0) == superblock.count else {
            throw SetupError("cannot read the first 4 KiB of \(metadataDevice)", fix: "check the device")
        }
        let thinMagic: [UInt8] = [0xba, 0x51, 0x9c, 0x01, 0, 0, 0, 0]  // 27022010, little-endian, at byte 32
        if Array(superblock[32..<40]) == thinMagic {
            throw SetupError("\(metadataDevice) already holds a thin pool's metadata, and \(metadataFile) is missing",
                             fix: "restore \(metadataFile) from a backup; to start over instead, zero the device's first 4 KiB (dd if=/dev/zero of=\(metadataDevice) bs=4k count=1)")
        }
        try device.writeAll([UInt8](repeating: 0, count: 4096), path: metadataDevice)
        try sys("fsync", metadataDevice) { fsync(device.raw) }
    }

    private func activatePool(blockSectors: UInt64) throws {
        // Loop devices detach themselves once the pool (their only user
        // after these holders close) is removed.
        var holders: [Descriptor] = []
        func device(_ path: String) throws -> String {
            guard usesLoopFiles else { return path }
            let (loop, holder) = try Loop.attach(path)
            holders.append(holder)
            return loop
        }
        let data = try device(dataDevice)
        let meta = try device(metadataDevice)
        let dataSectors = try blockDeviceSize(data) / 512 / blockSectors * blockSectors
        guard dataSectors > 0 else {
            throw SetupError("pool data device \(dataDevice) is smaller than one block", fix: "give the pool a bigger data device")
        }
        let lowWater = max(1, dataSectors / blockSectors / 10)
        try DeviceMapper.create(poolName, uuid: "", target: "thin-pool", sectors: dataSectors,
                                parameters: "\(meta) \(data) \(blockSectors) \(lowWater) 1 error_if_no_space")
        withExtendedLifetime(holders) {}
    }

    /// LVM's own thin pools are built from `_tdata`/`_tmeta` devices; a
    /// second pool on them would corrupt LVM's view. Plain LVs are fine.
    private func refuseLVMPoolParts() throws {
        for path in [dataDevice, metadataDevice] {
            guard let identity = DeviceMapper.identity(ofDevice: path), identity.uuid.hasPrefix("LVM-") else { continue }
            if ["_tdata", "_tmeta", "-tpool"].contains(where: { identity.name.contains($0) }) {
                throw SetupError("\(path) is part of an LVM-managed thin pool (\(identity.name))",
                                 fix: "give loginchroot its own devices (plain LVs made with lvcreate are fine)")
            }
        }
    }

    func poolStatus() throws -> ThinPoolStatus {
        let line = try DeviceMapper.status(poolName)
        guard let status = ThinPoolStatus(line) else {
            throw SetupError("thin pool \(poolName) reports '\(line)'",
                             fix: "check the kernel log; a pool in Fail or read-only mode needs thin_check/thin_repair")
        }
        return status
    }

    // MARK: SnapshotBackend

    /// A login's check: prepare settles the metadata against the pool (and
    /// refuses drift) under the pool lock, which is taken once per login.
    public func checkOnline() throws {
        guard Files.exists(metadataFile) else {
            throw SetupError("store \(store) is not initialised for the dm-thin backend",
                             fix: "run 'loginchroot init --from-dir DIR' (or --from-tar, --debootstrap)")
        }
        try Files.checkOwnedByRoot(store, kind: "store directory")
        guard try DeviceMapper.info(poolName) != nil else {
            throw SetupError("thin pool \(poolName) is not active", fix: "run 'loginchroot start'")
        }
    }

    public func checkStore() throws {
        try checkOnline()
        // Under the lock: a change in progress moves the pool's transaction
        // and then the metadata file, and a login reading both between the
        // two saw drift that was not there (20 concurrent logins in the VM lab).
        try withLock {
            let metadata = try loadMetadata(), pool = try poolStatus().transaction
            if metadata.settlement(poolTransaction: pool) == .mismatch { throw drift(metadata, pool: pool) }
        }
    }

    public func currentGeneration() throws -> Generation {
        guard let current = try loadMetadata().current else {
            throw SetupError("no generation has been published in \(store)", fix: "run 'loginchroot publish'")
        }
        return current
    }

    public func generations() throws -> [Generation] { try loadMetadata().liveGenerations }

    public func prepare(_ key: RootKey, from generation: Generation) throws -> RootLayout {
        let name = ThinNames.volume(config.poolName, .session(key))
        try withSettledMetadata { metadata, status in
            let free = min(status.dataFreePercent, status.metadataFreePercent)
            guard free >= config.minFreePercent else {
                throw SetupError("thin pool \(poolName) has \(status.dataFreePercent)% data and \(status.metadataFreePercent)% metadata space free, below min_free \(config.minFreePercent)%",
                                 fix: "end sessions, remove old generations ('loginchroot gc'), or give the pool more space")
            }
            guard metadata.volume(.session(key)) == nil else {
                throw SetupError("a thin volume for \(key) already exists", fix: "run 'loginchroot gc'")
            }
            guard let origin = metadata.volume(.generation(generation)), origin.state == .live else {
                throw SetupError("generation \(generation) has no thin volume", fix: "run 'loginchroot publish'")
            }
            try create(.session(key), in: &metadata) { "create_snap \($0) \(origin.id)" }
            try activate(name, id: metadata.volume(.session(key))!.id, sectors: metadata.sectors)
        }
        return RootLayout(mounts: [volumeMount(name)], rootSubpath: "")
    }

    public func remove(_ key: RootKey) throws {
        try removeVolume(.session(key))
    }

    public func rootSnapshots() throws -> [RootKey] { try loadMetadata().sessions }

    public func createMaster() throws {
        if !Files.exists(metadataFile) { try createPool() }
        try withSettledMetadata { metadata, _ in
            if metadata.volume(.master) == nil {
                try create(.master, in: &metadata) { "create_thin \($0)" }
            }
        }
        _ = try masterLayout()  // activates it
        let device = DeviceMapper.devicePath(ThinNames.volume(config.poolName, .master))
        if !hasFilesystem(device) {
            let command = ["mkfs.\(config.filesystem.rawValue)", "-q", device]
            let made = try Processes.runQuietly(command)
            guard made.status == 0 else {
                throw SetupError("\(command[0]) on \(device) failed (exit \(made.status)):\n\(made.output)",
                                 fix: "see \(command[0])'s words above, then run init again")
            }
        }
    }

    public func masterLayout() throws -> RootLayout {
        let metadata = try loadMetadata()
        guard let master = metadata.volume(.master), master.state == .live else {
            throw SetupError("the pool has no master volume", fix: "run 'loginchroot init'")
        }
        let name = ThinNames.volume(config.poolName, .master)
        try activate(name, id: master.id, sectors: metadata.sectors)
        try resumeIfSuspended(name)
        return RootLayout(mounts: [volumeMount(name)], rootSubpath: "")
    }

    public func generationLayout(_ generation: Generation) throws -> RootLayout {
        let metadata = try loadMetadata()
        guard let volume = metadata.volume(.generation(generation)), volume.state == .live else {
            throw SetupError("the pool has no volume for generation \(generation)", fix: "run 'loginchroot publish'")
        }
        let name = ThinNames.volume(config.poolName, .generation(generation))
        try activate(name, id: volume.id, sectors: metadata.sectors)
        // Read-only on the superblock, and no journal replay: nothing writes.
        let options = [config.filesystem.mountOptions, "ro", config.filesystem == .xfs ? "norecovery" : "noload"]
        return RootLayout(mounts: [.device(source: DeviceMapper.devicePath(name), type: config.filesystem.rawValue,
                                           options: options.filter { !$0.isEmpty }.joined(separator: ","), target: "")],
                          rootSubpath: "")
    }

    public func publish() throws -> Generation {
        try withSettledMetadata { metadata, _ in
            guard let master = metadata.volume(.master), master.state == .live else {
                throw SetupError("the pool has no master volume", fix: "run 'loginchroot init'")
            }
            let generation = metadata.nextGeneration
            // An active master may be mounted and written: suspending it
            // flushes and freezes its filesystem, so the snapshot is clean.
            let masterName = ThinNames.volume(config.poolName, .master)
            let suspend = try DeviceMapper.info(masterName) != nil
            if suspend { try DeviceMapper.suspend(masterName) }
            defer { if suspend { try? DeviceMapper.resume(masterName) } }
            CrashPoint.reached("publish.master-suspended")
            try create(.generation(generation), in: &metadata, current: generation) { "create_snap \($0) \(master.id)" }
            return generation
        }
    }

    public func removeGeneration(_ generation: Generation) throws {
        try removeVolume(.generation(generation))
    }

    /// Interrupted operations are settled on every use of the metadata;
    /// this reports (and finishes) any still pending, and fails on drift.
    public func finishInterruptedPublishes() throws -> [String] {
        try withLock {
            try resumeIfSuspended(ThinNames.volume(config.poolName, .master))
            let metadata = try loadMetadata()
            _ = try settled(metadata, poolTransaction: try poolStatus().transaction)
            guard let pending = metadata.pending else { return [] }
            return ["\(pending.role) (thin id \(pending.id), unfinished \(pending.state == .creating ? "create" : "delete"))"]
        }
    }

    public func usage() throws -> SpaceUsage {
        let status = try poolStatus()
        let metadata = try loadMetadata()
        let blockBytes = metadata.blockSectors * 512
        return SpaceUsage(totalBytes: status.dataTotal * blockBytes,
                          freeBytes: (status.dataTotal - min(status.dataUsed, status.dataTotal)) * blockBytes,
                          metadataTotalBytes: status.metadataTotal * 4096,
                          metadataFreeBytes: (status.metadataTotal - min(status.metadataUsed, status.metadataTotal)) * 4096,
                          rootLimit: RootLimit(bytes: metadata.sectors * 512, howToLower: "give the store more space (a bigger data device); the size of a root is fixed when the store is made, so a smaller volume_size takes 'loginchroot init' on a new store"))
    }

    // MARK: volumes

    private func volumeMount(_ name: String) -> MountSpec {
        .device(source: DeviceMapper.devicePath(name), type: config.filesystem.rawValue,
                options: config.filesystem.mountOptions, target: "")
    }

    private func activate(_ name: String, id: UInt32, sectors: UInt64) throws {
        guard try DeviceMapper.info(name) == nil else { return }
        guard let pool = try DeviceMapper.info(poolName) else {
            throw SetupError("thin pool \(poolName) is not active", fix: "run 'loginchroot start'")
        }
        try DeviceMapper.create(name, uuid: "", target: "thin", sectors: sectors, parameters: "\(pool.major):\(pool.minor) \(id)")
    }

    /// Removes the volume's device (waiting briefly for the last user of a
    /// dying namespace to let go), then its thin id.
    private func removeVolume(_ role: ThinMetadata.Role) throws {
        let name = ThinNames.volume(config.poolName, role)
        // Nothing to do is not an error, whatever state the pool is in: a
        // login refused before its snapshot existed must not quarantine.
        if try DeviceMapper.info(name) == nil, try loadMetadata().volume(role) == nil { return }
        try deactivate(name)
        CrashPoint.reached("thin.device-removed")
        try withSettledMetadata { metadata, _ in
            guard let volume = metadata.volume(role) else { return }
            try change(&metadata, marking: ThinMetadata.Volume(id: volume.id, role: role, state: .deleting),
                       message: "delete \(volume.id)")
        }
    }

    /// A publish killed between its suspend and resume leaves master
    /// suspended, and every read of it would hang.
    private func resumeIfSuspended(_ name: String) throws {
        if try DeviceMapper.info(name)?.suspended == true { try DeviceMapper.resume(name) }
    }

    private func deactivate(_ name: String) throws {
        // A device is busy for a moment after the last process in its root is gone.
        let removed = try Deadline(seconds: 5).poll {
            guard let info = try DeviceMapper.info(name) else { return true }
            if info.deferredRemove { throw busy(name) }
            do {
                try DeviceMapper.remove(name)
                return true
            } catch let error as SystemError where error.errno == EBUSY {
                return false
            }
        }
        if removed { return }
        if try DeviceMapper.info(name) == nil { return }
        try DeviceMapper.remove(name, deferred: true)
        throw busy(name)
    }

    private func busy(_ name: String) -> SetupError {
        SetupError("device \(name) is still open; the kernel removes it when its last user closes it",
                   fix: "end what holds it (\(whoHolds(name))); 'loginchroot gc' deletes the volume afterwards")
    }

    /// How to see what holds a device on a Debian 12 that has only what
    /// this package depends on (fuser is in psmisc, which it may lack).
    private func whoHolds(_ name: String) -> String {
        "devices: ls /sys/class/block/$(basename $(readlink -f /dev/mapper/\(name)))/holders; "
            + "processes: fuser -vm /dev/mapper/\(name) (apt install psmisc)"
    }

    private func create(_ role: ThinMetadata.Role, in metadata: inout ThinMetadata, current: Generation? = nil,
                        message: (UInt32) -> String) throws {
        guard let id = metadata.freeID() else {
            throw SetupError("thin pool \(poolName) has no free thin id", fix: "run 'loginchroot gc'")
        }
        try change(&metadata, marking: ThinMetadata.Volume(id: id, role: role, state: .creating),
                   message: message(id), current: current)
    }

    /// Steps 1-4 of the protocol in ThinMetadata.swift.
    private func change(_ metadata: inout ThinMetadata, marking volume: ThinMetadata.Volume, message: String,
                        current: Generation? = nil) throws {
        let before = metadata
        metadata.volumes.removeAll { $0.id == volume.id }
        metadata.volumes.append(volume)
        try save(metadata)
        CrashPoint.reached("thin.intent-saved")
        do {
            try DeviceMapper.message(poolName, message)
        } catch {
            // The pool refused: nothing changed there.
            metadata = before
            try save(metadata)
            throw error
        }
        CrashPoint.reached("thin.pool-changed")
        try DeviceMapper.message(poolName, "set_transaction_id \(metadata.transaction) \(metadata.transaction + 1)")
        CrashPoint.reached("thin.transaction-set")
        metadata.finishPending()
        if let current { metadata.current = current }
        try save(metadata)
    }

    /// Brings the metadata and the pool to agreement (see ThinMetadata) and
    /// returns the metadata as saved.
    private func settled(_ metadata: ThinMetadata, poolTransaction pool: UInt64) throws -> ThinMetadata {
        var metadata = metadata
        switch metadata.settlement(poolTransaction: pool) {
        case .consistent:
            return metadata
        case .rollForward:
            metadata.finishPending()
        case .discard(let id):
            do {
                try DeviceMapper.message(poolName, "delete \(id)")
            } catch let error as SystemError where error.errno == ENODATA {
                // Never created, or already deleted.
            }
            metadata.dropPending()
        case .mismatch:
            throw drift(metadata, pool: pool)
        }
        try save(metadata)
        return metadata
    }

    private func drift(_ metadata: ThinMetadata, pool: UInt64) -> SetupError {
        SetupError("thin pool \(poolName) is at transaction \(pool) but \(metadataFile) is at \(metadata.transaction)",
                   fix: "the pool was changed outside loginchroot or the metadata was restored from an old copy; compare 'dmsetup status \(poolName)' with the file before going on")
    }

    private func withLock<T>(_ body: () throws -> T) throws -> T {
        let lock = try FileLock(path: lockFile, timeoutSeconds: config.lockTimeoutSeconds)
        defer { withExtendedLifetime(lock) {} }
        return try body()
    }

    /// Runs `body` under the store's lock with settled metadata and the
    /// pool's status (read once: logins come through here).
    private func withSettledMetadata<T>(_ body: (inout ThinMetadata, ThinPoolStatus) throws -> T) throws -> T {
        try withLock {
            let status = try poolStatus()
            var metadata = try settled(try loadMetadata(), poolTransaction: status.transaction)
            return try body(&metadata, status)
        }
    }

    func loadMetadata() throws -> ThinMetadata {
        let text: String
        do { text = try Files.read(metadataFile) } catch {
            throw SetupError("cannot read \(metadataFile): \(error)", fix: "run 'loginchroot init' on a new machine")
        }
        return try ThinMetadata.parse(text, file: metadataFile)
    }

    private func save(_ metadata: ThinMetadata) throws {
        try Files.writeAtomically(metadataFile, metadata.rendered, mode: 0o600)
    }

    // MARK: helpers

    private func blockDeviceSize(_ path: String) throws -> UInt64 {
        let device = try Descriptor.open(path, O_RDONLY)
        return UInt64(try sys("lseek", path) { lseek(device.raw, 0, SEEK_END) })
    }

    /// ext4 and xfs both have a magic number in their first 2 KiB.
    private func hasFilesystem(_ path: String) -> Bool {
        guard let device = try? Descriptor.open(path, O_RDONLY) else { return false }
        var bytes = [UInt8](repeating: 0, count: 2048)
        guard pread(device.raw, &bytes, bytes.count, 0) == bytes.count else { return false }
        let ext4 = bytes[1080] == 0x53 && bytes[1081] == 0xEF
        let xfs = bytes[0..<4] == [0x58, 0x46, 0x53, 0x42][...]
        return ext4 || xfs
    }
}
