// Named steps of open, close, publish and gc, where the crash tests kill the
// login process or the helper. Only debug builds act on them (the tests'
// build; `make install` installs release builds, where a step is a no-op):
//
//   LOGINCHROOT_TEST_TRACE=FILE          append each step reached to FILE
//   LOGINCHROOT_TEST_CRASH_AT=STEP       SIGKILL the process at STEP
//   LOGINCHROOT_TEST_CRASH_AT=STEP#N     ... the Nth time it reaches STEP (a
//                                        login and logout in one process
//                                        pass dm-thin's steps twice)
//   LOGINCHROOT_TEST_CRASH_AT=STEP:power-loss
//                                        reset the machine at STEP without
//                                        syncing (the VM lab's power cut)
//   LOGINCHROOT_TEST_CRASH_AT=STEP:stop  SIGSTOP the process at STEP (a
//                                        login stopped with what it holds)
//   LOGINCHROOT_TEST_CRASH_AT=STEP:pause sleep 3 s at STEP
import Glibc

public enum CrashPoint {
    @inline(__always)
    public static func reached(_ step: StaticString) {
        #if DEBUG
        act(at: "\(step)")
        #endif
    }

    #if DEBUG
    // Debug builds' test hook only, unguarded as it always was: the crash
    // tests that name a step's Nth pass (step#N) run one thread.
    nonisolated(unsafe) private static var timesReached: [String: Int] = [:]
    private static let notOpened: Int32 = -2
    nonisolated(unsafe) private static var traceFD = notOpened

    private static func act(at step: String) {
        let count = (timesReached[step] ?? 0) + 1
        timesReached[step] = count
        if traceFD == notOpened {
            // Opened at the first step (always on the host) and kept: later
            // steps are reached inside the root, where the path means nothing.
            traceFD = getenv("LOGINCHROOT_TEST_TRACE").map { open($0, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600) } ?? -1
        }
        if traceFD >= 0 {
            let line = step + "\n"
            _ = line.withCString { write(traceFD, $0, strlen($0)) }
        }
        guard let wanted = getenv("LOGINCHROOT_TEST_CRASH_AT").map({ String(cString: $0) }) else { return }
        if wanted == step || wanted == "\(step)#\(count)" {
            kill(getpid(), SIGKILL)
        } else if wanted == step + ":stop" {
            kill(getpid(), SIGSTOP)
        } else if wanted == step + ":pause" {
            sleep(3)
        } else if wanted == step + ":power-loss" {
            let fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC)
            if fd >= 0 { _ = write(fd, "b", 1) }  // reboots at once, no sync
            kill(getpid(), SIGKILL)
        }
    }
    #endif
}
