// A fake machine (RootNamespaces and Reaper) and a fake SnapshotBackend:
// they record every call and fail on request. No syscalls beyond files in
// the test's temporary directory.
import Foundation
import XCTest
@testable import LoginChroot
@testable import LoginChrootCore
import LoginChrootPlatform

struct FakeError: Error, CustomStringConvertible, Equatable {
    var what: String
    init(_ what: String) { self.what = what }
    var description: String { "fake failure: \(what)" }
}

/// The machine as the session manager sees it through RootNamespaces and
/// the Reaper. The host namespace fds it hands out are real (each on a file
/// of its own), so a test sees which were closed.
final class FakeSystem: RootNamespaces, Reaper {
    // Configuration
    var accounts: [String: Account] = [:]
    var lookupError: Error?
    var boot = "boot-1"
    /// The namespace inode each pin holds (buildRoot pins, unpin drops).
    var pins: [String: UInt64] = [:]
    var cgroupsAvailable = true
    /// Each caller() hands out the next pid unless `fixedPid` is set.
    var nextPid: Int32 = 1000
    var fixedPid: Int32?
    var deadPids: Set<Int32> = []
    var openNamespaceError: Error?
    var buildError: Error?
    var joinError: Error?
    var returnError: Error?
    var unpinError: Error?
    var killSucceeds = true
    var leftover: [String] = []
    var nextInode: UInt64 = 4026532000
    /// Where the files behind the host namespace fds are made.
    let fdDirectory: String

    // Recordings
    var calls: [String] = []
    var builtPlans: [(plan: RootPlan, staging: String, pin: String)] = []
    var joined: [String] = []
    var returnedToHost: [Int32] = []
    /// Every host namespace fd handed out, with the file behind it.
    var hostNamespaces: [(fd: Int32, file: String)] = []
    var unpinned: [String] = []
    var placements: [CgroupPlacement] = []
    var movedTo: [String] = []
    var killCalls: [(cgroups: [String], identity: RootIdentity?)] = []
    var removedCgroups: [String] = []
    var retries = 0
    var homes: [String] = []
    var moveSucceeds = true
    /// Cgroups delegated to a user.
    var delegated: Set<String> = []

    init(fdDirectory: String) { self.fdDirectory = fdDirectory }

    func add(_ account: Account) { accounts[account.name.value] = account }

    func lookupAccount(_ name: UserName) throws -> Account? {
        calls.append("lookupAccount \(name)")
        if let lookupError { throw lookupError }
        return accounts[name.value]
    }

    /// The host namespace fds handed out that are closed now.
    var closedHostNamespaces: [Int32] {
        hostNamespaces.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0.fd)")) != $0.file }
            .map(\.fd)
    }

    // MARK: RootNamespaces

    var bootID: String { boot }
    func pinnedNamespace(at pin: String) -> UInt64? { pins[pin] }

    func openHostNamespace() throws -> Descriptor {
        calls.append("openHostNamespace")
        if let openNamespaceError { throw openNamespaceError }
        let file = fdDirectory + "/host-namespace-\(hostNamespaces.count)"
        let fd = try Descriptor.open(file, O_RDONLY | O_CREAT)
        hostNamespaces.append((fd.raw, file))
        return fd
    }

    func buildRoot(_ plan: RootPlan, state: StateStore, host: Descriptor) throws -> RootIdentity {
        calls.append("buildRoot \(plan.key)")
        let pin = state.pinPath(plan.key)
        builtPlans.append((plan, state.stagingDir, pin))
        if let buildError { throw buildError }
        // The real one pins the namespace with a file bind-mounted over it.
        nextInode += 1
        _ = FileManager.default.createFile(atPath: pin, contents: nil)
        pins[pin] = nextInode
        return RootIdentity(namespaceInode: nextInode, rootMount: 77)
    }

    func joinRoot(pin: String) throws {
        calls.append("joinRoot \(pin)")
        joined.append(pin)
        if let joinError { throw joinError }
    }

    func enterHome(_ home: String) {
        calls.append("enterHome \(home)")
        homes.append(home)
    }

    func returnToHost(_ fd: Int32) throws {
        calls.append("returnToHost \(fd)")
        returnedToHost.append(fd)
        if let returnError { throw returnError }
    }

    func unpin(_ pin: String) throws {
        calls.append("unpin \(pin)")
        unpinned.append(pin)
        if let unpinError { throw unpinError }
        try? FileManager.default.removeItem(atPath: pin)
        pins[pin] = nil
    }

    // MARK: Reaper

    func caller() -> (pid: Int32, startTime: UInt64) {
        let pid: Int32
        if let fixedPid { pid = fixedPid } else { pid = nextPid; nextPid += 1 }
        return (pid, UInt64(pid) * 10)
    }

    func isAlive(_ member: Member) -> Bool { !deadPids.contains(member.pid) }

    var shieldedCalls = 0
    func shielded<T>(_ body: () throws -> T) rethrows -> T {
        shieldedCalls += 1
        return try body()
    }

    func placeCaller(inCgroupNamed name: String) throws -> CgroupPlacement {
        calls.append("placeCaller \(name)")
        guard cgroupsAvailable else { throw FakeError("no cgroup2") }
        let placement = CgroupPlacement(cgroup: "/user.slice/" + name, parent: "/user.slice")
        placements.append(placement)
        return placement
    }

    func moveCaller(toCgroup parent: String) -> Bool {
        calls.append("moveCaller \(parent)")
        movedTo.append(parent)
        return moveSucceeds
    }

    func killAll(cgroups: [String], identity: RootIdentity?, timeoutSeconds: Int) -> Bool {
        calls.append("killAll \(cgroups)")
        killCalls.append((cgroups, identity))
        return killSucceeds
    }

    func removeCgroup(_ cgroup: String) { calls.append("removeCgroup \(cgroup)"); removedCgroups.append(cgroup) }
    func userControls(cgroup: String) -> Bool { delegated.contains(cgroup) }
    func leftoverCgroups(prefix: String) -> [String] {
        leftover.filter { ($0.split(separator: "/").last.map(String.init) ?? "").hasPrefix(prefix) }
    }

    /// Twenty tries, without the real one's pauses.
    func retryWhileBusy(_ release: () throws -> Void) throws {
        for attempt in 1...20 {
            do { return try release() } catch where attempt < 20 { retries += 1 }
        }
    }
}

final class FakeBackend: SnapshotBackend {
    var kind: BackendKind = .btrfs
    var rootsOutliveTheirGeneration = false
    var current: Generation? = Generation(number: 1)
    var allGenerations: [Generation] = [Generation(number: 1)]
    var snapshots: Set<RootKey> = []
    var temporaries: [String] = []
    var checkStoreError: Error?
    var confineError: Error?
    var prepareError: Error?
    /// The next this-many prepare() calls fail with prepareError.
    var prepareFailures = Int.max
    /// What awaitReclaimedSpace answers, and the errors it was asked about.
    var reclaimsSpace = false
    var reclaimAsked: [String] = []
    /// The next this-many remove() calls fail.
    var removeFailures = 0

    var calls: [String] = []
    var prepared: [(key: RootKey, generation: Generation)] = []
    var removed: [RootKey] = []
    var removedGenerations: [Generation] = []

    func checkStore() throws {
        calls.append("checkStore")
        if let checkStoreError { throw checkStoreError }
    }

    func checkOnline() throws {
        calls.append("checkOnline")
        if let checkStoreError { throw checkStoreError }
    }

    func currentGeneration() throws -> Generation {
        calls.append("currentGeneration")
        guard let current else { throw SetupError("no generation has been published", fix: "run 'loginchroot publish'") }
        return current
    }

    func generations() throws -> [Generation] { allGenerations.sorted() }

    func prepare(_ key: RootKey, from generation: Generation) throws -> RootLayout {
        calls.append("prepare \(key) \(generation)")
        prepared.append((key, generation))
        if let prepareError, prepareFailures > 0 {
            prepareFailures -= 1
            throw prepareError
        }
        snapshots.insert(key)
        return RootLayout(mounts: [.directory("sessions/\(key)")], rootSubpath: "sessions/\(key)/root")
    }

    func remove(_ key: RootKey) throws {
        calls.append("remove \(key)")
        removed.append(key)
        if removeFailures > 0 {
            removeFailures -= 1
            throw FakeError("snapshot \(key) busy")
        }
        snapshots.remove(key)
    }

    func rootSnapshots() throws -> [RootKey] { snapshots.sorted() }
    func createMaster() throws { calls.append("createMaster") }
    func bringOnline() throws { calls.append("bringOnline") }
    func takeOffline() throws -> String? { nil }
    func masterLayout() throws -> RootLayout { RootLayout(mounts: [], rootSubpath: "master") }
    func generationLayout(_ generation: Generation) throws -> RootLayout { RootLayout(mounts: [], rootSubpath: generation.name) }

    func publish() throws -> Generation {
        let next = (allGenerations.max() ?? Generation(number: 0)).next
        allGenerations.append(next)
        current = next
        return next
    }

    func removeGeneration(_ generation: Generation) throws {
        calls.append("removeGeneration \(generation)")
        removedGenerations.append(generation)
        allGenerations.removeAll { $0 == generation }
    }

    func finishInterruptedPublishes() throws -> [String] {
        defer { temporaries = [] }
        return temporaries
    }

    func usage() throws -> SpaceUsage { SpaceUsage(totalBytes: 1 << 30, freeBytes: 1 << 29) }

    func confineSession() throws {
        if let confineError { throw confineError }
    }

    func awaitReclaimedSpace(after error: Error, seconds: Int) -> Bool {
        reclaimAsked.append("\(error)")
        return reclaimsSpace
    }
}
