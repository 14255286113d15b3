// Account lookups through NSS (so LDAP and sssd users work like local ones).
import Glibc
import LoginChrootCore

public enum Accounts {
    public static func lookup(_ name: UserName) throws -> Account? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        let rc = getpwnam_r(name.value, &entry, &buffer, buffer.count, &result)
        if rc != 0 { throw SystemError(call: "getpwnam_r", path: name.value, errno: rc) }
        guard result != nil else { return nil }
        let home = String(cString: entry.pw_dir), shell = String(cString: entry.pw_shell)
        let gecos = String(cString: entry.pw_gecos).filter { $0 != ":" && $0 != "\n" }
        let line = "\(name.value):x:\(entry.pw_uid):\(entry.pw_gid):\(gecos):\(home):\(shell)"
        var groups: [String] = []
        var gids = [gid_t](repeating: 0, count: 256)
        var count = Int32(gids.count)
        if getgrouplist(name.value, entry.pw_gid, &gids, &count) >= 0 {
            groups = gids.prefix(Int(count)).compactMap(groupName)
        }
        return Account(name: name, uid: entry.pw_uid, gid: entry.pw_gid, home: home, shell: shell,
                       passwdLine: line, groupNames: groups)
    }

    public static func groupName(_ gid: gid_t) -> String? {
        var entry = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 65536)
        guard getgrgid_r(gid, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return String(cString: entry.gr_name)
    }

    public static func groupID(_ name: String) -> UInt32? {
        var entry = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 65536)
        guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return entry.gr_gid
    }
}

/// An exclusive flock on a file, released when the value is dropped.
public final class FileLock {
    let fd: Descriptor

    public init(path: String) throws {
        fd = try Descriptor.open(path, O_RDWR | O_CREAT | O_NOFOLLOW, mode: 0o600)
        try sys("flock", path) { flock(fd.raw, LOCK_EX) }
    }
}
