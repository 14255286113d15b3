// Waiting: file locks with a deadline, and the monotonic clock they and the
// poll loops measure it with.
import Glibc
import LoginChrootCore

/// An exclusive flock on a file, released when the value is dropped.
public final class FileLock {
    let fd: Descriptor

    /// Waits at most `timeoutSeconds` (nil: forever). A login must never
    /// hang because another process holds the lock (stopped, or stuck).
    /// `shared`: a shared lock, which only an exclusive one excludes.
    public init(path: String, timeoutSeconds: Int? = nil, shared: Bool = false) throws {
        fd = try Descriptor.open(path, O_RDWR | O_CREAT | O_NOFOLLOW, mode: 0o600)
        let mode = shared ? LOCK_SH : LOCK_EX
        guard let timeoutSeconds else {
            try sys("flock", path) { flock(fd.raw, mode) }
            return
        }
        let deadline = Clock.monotonicSeconds() + Double(timeoutSeconds)
        while flock(fd.raw, mode | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else { throw SystemError(call: "flock", path: path, errno: errno) }
            guard Clock.monotonicSeconds() < deadline else {
                throw SetupError("\(path) has been locked by another process for \(timeoutSeconds)s",
                                 fix: "find the stuck loginchroot process (fuser -v \(path); apt install psmisc) and end it")
            }
            Processes.sleep(milliseconds: 20)
        }
    }
}

public enum Clock {
    public static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
