// What the running kernel is.
import Glibc

public enum Kernel {
    /// (major, minor) of the running kernel, from uname(2).
    public static func version() -> (Int, Int)? {
        var name = utsname()
        guard uname(&name) == 0 else { return nil }
        let release = withUnsafePointer(to: name.release) {
            $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) }
        }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }

    /// This boot's id: numbers recorded in an earlier boot (namespace
    /// inodes, device numbers) name nothing of ours in this one.
    public static func bootID() -> String {
        ((try? Files.read("/proc/sys/kernel/random/boot_id")) ?? "").filter { $0 != "\n" }
    }
}
