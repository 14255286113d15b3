// Waiting: one deadline policy for every poll loop, and the file locks that
// wait with it.
import Glibc
import LoginChrootCore

public enum Clock {
    public static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

/// A point in time a wait gives up at. Every poll loop (locks, kills, busy
/// mounts and devices, the store's reclaim) uses `poll`: the first pauses
/// are short, because what it waits for is usually gone within a few ms
/// (a killed process, a namespace's last mount); later ones grow to 50 ms,
/// so a stubborn wait (a process in uninterruptible sleep on a hung NFS
/// home) costs little CPU.
public struct Deadline {
    public let end: Double
    public init(seconds: Double) { end = Clock.monotonicSeconds() + seconds }

    public var hasPassed: Bool { Clock.monotonicSeconds() >= end }

    /// Calls `done` until it returns true (then true) or the deadline has
    /// passed (then false). `done` is always called at least once.
    public func poll(_ done: () throws -> Bool) rethrows -> Bool {
        var pause = 1
        while true {
            if try done() { return true }
            if hasPassed { return false }
            Processes.sleep(milliseconds: pause)
            pause = min(pause * 2, 50)
        }
    }
}

/// An exclusive (or shared) flock on a file, released when the value is dropped.
public final class FileLock {
    let fd: Descriptor

    /// Locks `name` in `directory` (created 0600 if missing). Waits at most
    /// `timeoutSeconds` (nil: forever; 0: not at all). A login must never
    /// hang because another process holds the lock (stopped, or stuck).
    /// `path` names the file in errors.
    public init(_ name: String, in directory: Descriptor, path: String, timeoutSeconds: Int? = nil,
                shared: Bool = false) throws {
        fd = try directory.openFile(name, O_RDWR | O_CREAT, path: path)
        let mode = shared ? LOCK_SH : LOCK_EX
        guard let timeoutSeconds else {
            try sys("flock", path) { flock(fd.raw, mode) }
            return
        }
        let locked = try Deadline(seconds: Double(timeoutSeconds)).poll {
            try sys("flock", path, unless: EWOULDBLOCK) { flock(fd.raw, mode | LOCK_NB) } != nil
        }
        guard locked else {
            throw SetupError("\(path) has been locked by another process for \(timeoutSeconds)s",
                             fix: "find the stuck loginchroot process (fuser -v \(path); apt install psmisc) and end it")
        }
    }

    public convenience init(path: String, timeoutSeconds: Int? = nil) throws {
        let (directory, name) = try Descriptor.openParent(of: path)
        try self.init(name, in: directory, path: path, timeoutSeconds: timeoutSeconds)
    }
}
