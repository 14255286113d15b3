// SELinux labels of what the module writes into a root. Nothing here loads
// libselinux unless SELinux is on: the module reads selinuxfs's magic once
// per login. With SELinux on, every login loads the policy's file contexts
// (the marker and the runtime directory are new files each time).
import CLinux
import CSELinux
import Glibc

/// Where a file's label comes from; a fake in the tests.
public protocol FileLabels {
    /// The label `file` carries, if any.
    func label(of file: Descriptor) -> String?
    /// The label the loaded policy gives a new file of `mode` at `path`
    /// (a path as the root sees it), or nil when it gives none.
    func policyLabel(for path: String, mode: mode_t) throws -> String?
    /// Runs `create` with the files this thread creates labelled `label`
    /// (setfscreatecon): a file is born with its label, never relabelled.
    func creatingFiles<T>(labelled label: String, path: String, _ create: () throws -> T) throws -> T
}

public enum SELinux {
    static let mountPoint = "/sys/fs/selinux"
    static let attribute = "security.selinux"

    /// Whether SELinux is on (enforcing or permissive): selinuxfs mounted
    /// read-write, which is libselinux's own test (a read-only selinuxfs is
    /// how containers are shown SELinux as off).
    public static func isEnabled() -> Bool {
        let selinuxMagic: Int64 = 0xf97c_ff8c
        guard lc_filesystem_magic(mountPoint) == selinuxMagic else { return false }
        var info = statvfs()
        return statvfs(mountPoint, &info) == 0 && info.f_flag & UInt(ST_RDONLY) == 0
    }

    /// Whether the loaded policy has `context` (what security_check_context
    /// asks selinuxfs): a type of a module that is not loaded is refused.
    public static func policyKnows(_ context: String) -> Bool {
        guard let file = try? Descriptor.open(mountPoint + "/context", O_RDWR) else { return false }
        return write(file.raw, context, context.utf8.count + 1) > 0
    }

    /// The labels of a machine with SELinux on, nil on one without.
    public static func labelsIfEnabled() -> FileLabels? { isEnabled() ? PolicyLabels() : nil }

    /// The loaded policy's file_contexts (of the policy type named in
    /// /etc/selinux/config), for setfiles.
    public static func fileContextsPath() throws -> String {
        let config = try Files.read("/etc/selinux/config")
        let type = config.split(separator: "\n").compactMap { line -> String? in
            let parts = line.split(separator: "=", maxSplits: 1).map { String($0).trimmed }
            return parts.count == 2 && parts[0] == "SELINUXTYPE" ? parts[1] : nil
        }.last ?? "default"
        return "/etc/selinux/\(type)/contexts/files/file_contexts"
    }
}

/// The real labels: xattrs on the files, the policy's lookup from libselinux
/// (opened on the first lookup, once).
final class PolicyLabels: FileLabels {
    private var handle: UnsafeMutableRawPointer?
    /// Longer than any context a policy writes (MLS ranges included).
    private static let contextLimit = 4096

    deinit { lcse_file_contexts_close(handle) }

    /// Nil for a label not worth keeping: none, unlabeled_t, or one the
    /// loaded policy does not know (an image labelled for another policy).
    func label(of file: Descriptor) -> String? {
        var buffer = [UInt8](repeating: 0, count: Self.contextLimit)
        let length = fgetxattr(file.raw, SELinux.attribute, &buffer, buffer.count)
        guard length > 0 else { return nil }
        let label = String(decoding: buffer[..<length].prefix { $0 != 0 }, as: UTF8.self)
        guard !label.split(separator: ":").dropFirst(2).starts(with: ["unlabeled_t"]), SELinux.policyKnows(label)
        else { return nil }
        return label
    }

    func policyLabel(for path: String, mode: mode_t) throws -> String? {
        if handle == nil {
            guard let opened = lcse_file_contexts_open() else {
                throw SystemError(call: "selabel_open", path: "file_contexts", errno: errno)
            }
            handle = opened
        }
        var buffer = [CChar](repeating: 0, count: Self.contextLimit)
        if lcse_file_context(handle, path, mode, &buffer, buffer.count) != 0 {
            if errno == ENOENT { return nil }
            throw SystemError(call: "selabel_lookup", path: path, errno: errno)
        }
        return string(fromCBuffer: buffer)
    }

    func creatingFiles<T>(labelled label: String, path: String, _ create: () throws -> T) throws -> T {
        // Per thread: another thread of the login program keeps its own. The
        // value the thread had (the login program may have set one) comes
        // back afterwards, or the login fails rather than label more files.
        let attribute = "/proc/thread-self/attr/fscreate"
        let previous = try Descriptor.open(attribute, O_RDONLY).readAll(limit: Self.contextLimit)
        // Its own fd: the kernel takes a write at offset 0 only.
        let fscreate = try Descriptor.open(attribute, O_WRONLY)
        try sys("setfscreatecon", path) { write(fscreate.raw, label, label.utf8.count) }
        let result = Result { try create() }
        try sys("setfscreatecon", attribute) {
            previous.withUnsafeBufferPointer { write(fscreate.raw, $0.baseAddress, $0.count) }
        }
        return try result.get()
    }
}
