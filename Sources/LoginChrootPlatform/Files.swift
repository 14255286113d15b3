// File access. Paths inside an image are always resolved relative to the
// image's root fd with openat2(RESOLVE_IN_ROOT), so a symlink in the image
// (even an absolute one) can never send a write onto the host.
import CLinux
import LoginChrootCore
import Glibc

/// An owned file descriptor. Always O_CLOEXEC: nothing leaks into the user's shell.
public final class Descriptor {
    public private(set) var raw: Int32

    /// O_PATH: a handle on a path that can be mounted on, not read.
    public static let pathOnly: Int32 = LC_O_PATH

    public init(adopting raw: Int32) { self.raw = raw }
    deinit { if raw >= 0 { Glibc.close(raw) } }

    /// Gives up ownership (for handing the fd to PAM).
    public func release() -> Int32 { defer { raw = -1 }; return raw }

    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws -> Descriptor {
        Descriptor(adopting: try sys("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) })
    }

    public static func openDirectory(_ path: String) throws -> Descriptor {
        try open(path, O_RDONLY | O_DIRECTORY)
    }

    /// The directory `path` is in, and its name there.
    public static func openParent(of path: String) throws -> (Descriptor, String) {
        let parent = parentDirectory(of: path)
        return (try openDirectory(parent.isEmpty ? "." : parent), String(path.split(separator: "/").last ?? ""))
    }

    /// Opens `path` below this directory, resolving every component inside it.
    public func openInside(_ path: String, _ flags: Int32, mode: mode_t = 0o644, noSymlinks: Bool = false) throws -> Descriptor {
        var resolve = LC_RESOLVE_IN_ROOT | LC_RESOLVE_NO_MAGICLINKS
        if noSymlinks { resolve |= LC_RESOLVE_NO_SYMLINKS }
        let relative = path.hasPrefix("/") ? String(path.drop(while: { $0 == "/" })) : path
        let fd = try sys("openat2", path) { lc_openat2(raw, relative.isEmpty ? "." : relative, flags | O_CLOEXEC, mode, resolve) }
        return Descriptor(adopting: fd)
    }

    /// Opens `name`, an entry of this directory (never a symlink).
    /// `path` names it in errors.
    public func openFile(_ name: String, _ flags: Int32, mode: mode_t = 0o600, path: String) throws -> Descriptor {
        Descriptor(adopting: try sys("openat", path) { openat(raw, name, flags | O_NOFOLLOW | O_CLOEXEC, mode) })
    }

    /// The content of entry `name` of this directory; nil when there is none.
    public func readFile(_ name: String, path: String) throws -> String? {
        let file: Descriptor
        do { file = try openFile(name, O_RDONLY, path: path) } catch let error as SystemError where error.errno == ENOENT {
            return nil
        }
        return String(decoding: try file.readAll(), as: UTF8.self)
    }

    /// Replaces entry `name` of this directory through a temporary file
    /// and rename, so a crash leaves the old or the new content, never
    /// half of it. `durable` also syncs both to disk, so that they survive
    /// a power loss (state that a power loss ends anyway needs no sync).
    public func replaceFile(_ name: String, with text: String, mode: mode_t = 0o600, durable: Bool = false,
                            path: String) throws {
        // ".NAME.tmp": a leading dot is never a valid record or generation name.
        let temporary = "." + name + ".tmp"
        let file = try openFile(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: mode, path: path + ".tmp")
        try file.writeAll(Array(text.utf8), path: path)
        if durable { try sys("fsync", path) { fsync(file.raw) } }
        try renameIntoPlace(temporary, as: name, durable: durable, path: path)
    }

    /// Renames entry `temporary` of this directory to `name`, replacing it.
    /// `durable`: the directory is synced, without which the rename itself
    /// would not survive a power loss.
    public func renameIntoPlace(_ temporary: String, as name: String, durable: Bool, path: String) throws {
        try sys("renameat", path) { renameat(raw, temporary, raw, name) }
        if durable { try sys("fsync", path) { fsync(raw) } }
    }

    /// Removes entry `name` of this directory; a missing one is no error.
    public func removeFile(_ name: String, path: String) throws {
        do { try sys("unlinkat", path) { unlinkat(raw, name, 0) } } catch let error as SystemError where error.errno == ENOENT {}
    }

    /// What entry `name` of this directory is (never following a symlink);
    /// nil when there is none. `path` names it in errors.
    public func entryInfo(_ name: String, path: String) throws -> Glibc.stat? {
        var info = Glibc.stat()
        return try sys("fstatat", path, unless: ENOENT) { fstatat(raw, name, &info, AT_SYMLINK_NOFOLLOW) } == nil ? nil : info
    }

    /// Whether this directory has an entry `name` (of any kind).
    public func hasEntry(_ name: String) -> Bool {
        var info = Glibc.stat()
        return fstatat(raw, name, &info, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// The names in this directory, sorted.
    public func entries() throws -> [String] {
        // A descriptor of its own: closedir closes it, and the walk starts at the beginning.
        let copy = try sys("openat", ".") { openat(raw, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard let dir = fdopendir(copy) else {
            let code = errno
            Glibc.close(copy)
            throw SystemError(call: "fdopendir", errno: code)
        }
        return Files.names(in: dir)
    }

    public func stat() throws -> Glibc.stat {
        var info = Glibc.stat()
        try sys("fstat") { fstat(raw, &info) }
        return info
    }

    /// The path the kernel resolves this fd to, for calls that only take paths (mount).
    public var procPath: String { "/proc/self/fd/\(raw)" }

    public func readAll(limit: Int = 16 << 20) throws -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try sys("read") { buffer.withUnsafeMutableBytes { Glibc.read(raw, $0.baseAddress, $0.count) } }
            if count == 0 { return result }
            result += buffer[0..<count]
            if result.count > limit { throw SystemError(call: "read", errno: EFBIG) }
        }
    }

    /// `path` names the file in an error.
    public func writeAll(_ bytes: [UInt8], path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let count = try sys("write", path) {
                bytes.withUnsafeBytes { Glibc.write(raw, $0.baseAddress! + offset, bytes.count - offset) }
            }
            offset += count
        }
    }
}

public enum Files {
    public static func exists(_ path: String) -> Bool {
        var info = Glibc.stat()
        return lstat(path, &info) == 0
    }

    public static func lstatInfo(_ path: String) throws -> Glibc.stat {
        var info = Glibc.stat()
        try sys("lstat", path) { lstat(path, &info) }
        return info
    }

    public static func isDirectory(_ path: String) -> Bool {
        var info = Glibc.stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    public static func read(_ path: String) throws -> String {
        let fd = try Descriptor.open(path, O_RDONLY | O_NOFOLLOW)
        return String(decoding: try fd.readAll(), as: UTF8.self)
    }

    /// Writes through a temporary file and rename, so a crash leaves either
    /// the old or the new content, never half of it. `durable` also syncs
    /// both to disk, so that they survive a power loss.
    public static func writeAtomically(_ path: String, _ text: String, mode: mode_t = 0o600) throws {
        let (directory, name) = try Descriptor.openParent(of: path)
        try directory.replaceFile(name, with: text, mode: mode, durable: true, path: path)
    }

    /// Creates `path` (which must not exist) as a sparse file of `size` bytes.
    /// Size and free space of the filesystem holding `path` (statvfs: the
    /// free space an unprivileged user may use).
    public static func space(at path: String) throws -> (totalBytes: UInt64, freeBytes: UInt64) {
        var fs = statvfs()
        try sys("statvfs", path) { statvfs(path, &fs) }
        return (UInt64(fs.f_blocks) * UInt64(fs.f_frsize), UInt64(fs.f_bavail) * UInt64(fs.f_frsize))
    }

    public static func createSparse(_ path: String, size: UInt64) throws {
        let file = try Descriptor.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o600)
        try sys("ftruncate", path) { ftruncate(file.raw, off_t(size)) }
    }

    public static func remove(_ path: String) throws {
        do { try sys("unlink", path) { unlink(path) } } catch let error as SystemError where error.errno == ENOENT {}
    }

    /// Creates `path` (one level) owned by root with `mode`, or checks the
    /// existing one: it must be a real directory not writable by group or others.
    public static func ensurePrivateDirectory(_ path: String, mode: mode_t = 0o700) throws {
        try makeDirectory(path, mode: mode)
        try checkOwnedByRoot(path, kind: "directory")
    }

    /// mkdir, unless it exists.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws {
        try sys("mkdir", path, unless: EEXIST) { mkdir(path, mode) }
    }

    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            try makeDirectory(current, mode: mode)
        }
    }

    /// Refuses files an unprivileged user could have changed: config files
    /// and state directories must be root-owned and not group/world writable.
    public static func checkOwnedByRoot(_ path: String, kind: String) throws {
        let info = try lstatInfo(path)
        if (info.st_mode & S_IFMT) == S_IFLNK {
            throw SetupError("\(kind) \(path) is a symlink", fix: "replace it with a real \(kind)")
        }
        if info.st_uid != 0 {
            throw SetupError("\(kind) \(path) is owned by uid \(info.st_uid), not root", fix: "chown root:root \(path)")
        }
        if info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
            throw SetupError("\(kind) \(path) is writable by group or others", fix: "chmod go-w \(path)")
        }
    }

    public static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw SystemError(call: "opendir", path: path, errno: errno) }
        return names(in: dir)
    }

    /// The names an open directory stream lists, sorted; closes it.
    static func names(in dir: OpaquePointer) -> [String] {
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Deletes the tree at `name` below `parent` without following symlinks
    /// and without crossing into another filesystem: a tree that still has
    /// something mounted in it fails with EBUSY instead of being emptied.
    /// Any depth and width, with a handful of fds (TreeWalk).
    public static func removeTree(parent: Descriptor, name: String) throws {
        guard let info = try parent.entryInfo(name, path: name) else { return }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            try sys("unlinkat", name) { unlinkat(parent.raw, name, 0) }
            return
        }
        let device = try parent.stat().st_dev
        guard info.st_dev == device else { throw SystemError(call: "removeTree", path: name, errno: EBUSY) }
        let top = Descriptor(adopting: try sys("openat", name) {
            openat(parent.raw, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        })
        try TreeWalk.postOrder(top, descend: { _, child in child.st_dev == device }, file: { directory, entry, entryInfo in
            guard (entryInfo.st_mode & S_IFMT) != S_IFDIR else {
                throw SystemError(call: "removeTree", path: entry, errno: EBUSY)  // a mount point
            }
            try sys("unlinkat", entry) { unlinkat(directory.raw, entry, 0) }
        }, leave: { parentOfEntry, entry, _, _ in
            try sys("unlinkat", entry) { unlinkat(parentOfEntry.raw, entry, AT_REMOVEDIR) }
        })
        try sys("unlinkat", name) { unlinkat(parent.raw, name, AT_REMOVEDIR) }
    }

    /// Resolves a host path the way a bind source must be: a symlink on the
    /// way is followed only when nobody but root could have put it there
    /// (owned by root, in a directory owned by root that nobody else may
    /// write), so one user cannot point another user's bind at a place of
    /// their choosing. Returns an O_PATH fd, which opens nothing and never
    /// blocks (a FIFO is harmless). Every component must belong to root or
    /// to `user`, or sit in a directory of root's or the user's that nobody
    /// else may write: a directory another user made in a shared place (a
    /// /scratch/UID made ahead of its owner) would collect the user's files.
    public static func openHostPath(_ path: String, user: UInt32) throws -> Descriptor {
        var pending = path.split(separator: "/").map(String.init)
        var current = try Descriptor.open("/", Descriptor.pathOnly | O_DIRECTORY)
        var followed = 0
        var resolved = ""
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." { continue }
            var info = Glibc.stat()
            try sys("fstatat", resolved + "/" + component) {
                fstatat(current.raw, component, &info, AT_SYMLINK_NOFOLLOW)
            }
            if (info.st_mode & S_IFMT) == S_IFLNK {
                let directory = try current.stat()
                guard info.st_uid == 0, directory.st_uid == 0, directory.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
                    throw SetupError("\(path): \(resolved)/\(component) is a symlink that uid \(info.st_uid) could have planted (in a directory of uid \(directory.st_uid), mode \(String(directory.st_mode & 0o7777, radix: 8)))",
                                     fix: "bind a path without such symlinks; under a directory others can write, give each user a directory made by root")
                }
                followed += 1
                guard followed <= 40 else { throw SystemError(call: "openHostPath", path: path, errno: ELOOP) }
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = try sys("readlinkat", component) { readlinkat(current.raw, component, &buffer, Int(PATH_MAX)) }
                let target = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                pending = target.split(separator: "/").map(String.init) + pending
                if target.hasPrefix("/") {
                    current = try Descriptor.open("/", Descriptor.pathOnly | O_DIRECTORY)
                    resolved = ""
                }
                continue
            }
            if info.st_uid != 0 && info.st_uid != user {
                let directory = try current.stat()
                guard directory.st_uid == 0 || directory.st_uid == user, directory.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
                    throw SetupError("\(path): \(resolved)/\(component) belongs to uid \(info.st_uid), in a directory others can write",
                                     fix: "move it aside (it may hold that user's files) and make the user's own as root: install -d -o USER -m 700 PATH")
                }
            }
            current = Descriptor(adopting: try sys("openat", resolved + "/" + component) {
                openat(current.raw, component, Descriptor.pathOnly | O_NOFOLLOW | O_CLOEXEC)
            })
            resolved += "/" + component
        }
        return current
    }
}

/// A depth-first walk of a directory tree that holds at most four fds and
/// bounded memory whatever the tree's depth: it climbs back through "..",
/// and remembers the names on the way down only for the first levels
/// (deeper, it finds a directory's name in its parent by device and inode).
/// Entries are visited in name order; the tree must not change meanwhile
/// except through the callbacks.
public enum TreeWalk {
    static let rememberedLevels = 4096

    /// `descend(parentInfo, childInfo)` says whether to enter a directory;
    /// `file(directory, name, info)` is called for every entry not entered;
    /// `leave(parent, name, info, parentInfo)` for every directory entered,
    /// once everything below it is done (not for `top` itself).
    public static func postOrder(_ top: Descriptor,
                                 descend: (Glibc.stat, Glibc.stat) -> Bool,
                                 file: (Descriptor, String, Glibc.stat) throws -> Void,
                                 leave: (Descriptor, String, Glibc.stat, Glibc.stat) throws -> Void) throws {
        var directory = try reopen(top, ".")
        var directoryInfo = try directory.stat()
        var names: [String] = []
        var depth = 0
        var resumeAfter: String?
        while true {
            var next: (name: String, info: Glibc.stat)?
            for name in try Files.listDirectory(directory.procPath) where resumeAfter.map({ name > $0 }) ?? true {
                guard let info = try directory.entryInfo(name, path: name) else { continue }
                if (info.st_mode & S_IFMT) == S_IFDIR && descend(directoryInfo, info) {
                    next = (name, info)
                    break
                }
                try file(directory, name, info)
            }
            if let next {
                let child = try reopen(directory, next.name)
                let childInfo = try child.stat()
                guard childInfo.st_dev == next.info.st_dev, childInfo.st_ino == next.info.st_ino else {
                    throw SystemError(call: "openat", path: next.name, errno: ESTALE)  // changed under us
                }
                if depth < rememberedLevels { names.append(next.name) }
                depth += 1
                directory = child
                directoryInfo = childInfo
                resumeAfter = nil
                continue
            }
            if depth == 0 { return }
            let parent = try reopen(directory, "..")
            let parentInfo = try parent.stat()
            let name = depth <= rememberedLevels ? names.removeLast() : try nameOf(directoryInfo, in: parent)
            depth -= 1
            try leave(parent, name, directoryInfo, parentInfo)
            directory = parent
            directoryInfo = parentInfo
            resumeAfter = name
        }
    }

    private static func reopen(_ directory: Descriptor, _ name: String) throws -> Descriptor {
        Descriptor(adopting: try sys("openat", name) {
            openat(directory.raw, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        })
    }

    private static func nameOf(_ info: Glibc.stat, in parent: Descriptor) throws -> String {
        for name in try Files.listDirectory(parent.procPath) {
            var candidate = Glibc.stat()
            if fstatat(parent.raw, name, &candidate, AT_SYMLINK_NOFOLLOW) == 0,
               candidate.st_dev == info.st_dev, candidate.st_ino == info.st_ino {
                return name
            }
        }
        throw SystemError(call: "TreeWalk", path: "..", errno: ENOENT)
    }
}
