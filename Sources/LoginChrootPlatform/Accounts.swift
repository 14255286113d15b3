// Account lookups through NSS (so LDAP and sssd users work like local ones).
import Glibc
import LoginChrootCore

public enum Accounts {
    /// Calls a *_r lookup with a buffer that grows on ERANGE (large LDAP
    /// groups do not fit a fixed one). Returns nil when there is no entry.
    static func withBuffer<Entry>(_ call: String, _ key: String, _ lookup: (UnsafeMutablePointer<CChar>, Int) -> (Int32, Entry?)) throws -> Entry? {
        var size = 16384
        while true {
            var buffer = [CChar](repeating: 0, count: size)
            let (rc, entry) = buffer.withUnsafeMutableBufferPointer { lookup($0.baseAddress!, size) }
            if rc == ERANGE && size < 64 << 20 { size *= 4; continue }
            if rc != 0 { throw SystemError(call: call, path: key, errno: rc) }
            return entry
        }
    }

    public static func lookup(_ name: UserName) throws -> Account? {
        let found: (uid: uid_t, gid: gid_t, gecos: String, home: String, shell: String)? = try withBuffer("getpwnam_r", name.value) { buffer, size in
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            let rc = getpwnam_r(name.value, &entry, buffer, size, &result)
            guard rc == 0, result != nil else { return (rc, nil) }
            return (0, (entry.pw_uid, entry.pw_gid, String(cString: entry.pw_gecos), String(cString: entry.pw_dir), String(cString: entry.pw_shell)))
        }
        guard let found else { return nil }
        // These fields go into the root's /etc/passwd: a ':' or newline in a
        // user-editable field (an LDAP loginShell) must not add a line.
        for (field, value) in [("home", found.home), ("shell", found.shell)] where value.unicodeScalars.contains(where: { $0 == ":" || $0 == "\n" }) {
            throw SetupError("the passwd entry of \(name) has a ':' or newline in its \(field)", fix: "correct the account's \(field)")
        }
        // By scalar: "\r\n" is one Character and would slip past a Character filter.
        var gecos = ""
        gecos.unicodeScalars.append(contentsOf: found.gecos.unicodeScalars.filter { $0 != ":" && $0 != "\n" && $0 != "\r" })
        let line = "\(name.value):x:\(found.uid):\(found.gid):\(gecos):\(found.home):\(found.shell)"
        var count: Int32 = 64
        var gids: [gid_t] = []
        while true {
            gids = [gid_t](repeating: 0, count: Int(count))
            let wanted = count
            if getgrouplist(name.value, found.gid, &gids, &count) >= 0 { break }
            if count <= wanted { count = wanted * 2 }  // glibc reports the size it needs
            guard count < 65536 else { throw SetupError("\(name) is in too many groups", fix: "check the account's groups") }
        }
        // Groups whose names could not be written safely into the root's
        // /etc/group (an AD "domain users" has a blank) are left out of it;
        // they cannot be exempt groups either (those names are validated).
        var groups: [GroupEntry] = []
        for gid in gids.prefix(Int(count)) {
            if let group = try groupName(gid), UserName(group) != nil { groups.append(GroupEntry(name: group, gid: gid)) }
        }
        return Account(name: name, uid: found.uid, gid: found.gid, home: found.home, shell: found.shell,
                       passwdLine: line, groups: groups)
    }

    public static func groupName(_ gid: gid_t) throws -> String? {
        try withBuffer("getgrgid_r", String(gid)) { buffer, size in
            var entry = group()
            var result: UnsafeMutablePointer<group>?
            let rc = getgrgid_r(gid, &entry, buffer, size, &result)
            return rc == 0 && result != nil ? (0, String(cString: entry.gr_name)) : (rc, nil)
        }
    }
}
