// Builds a root from a RootPlan: its mounts, the files written into the
// image, the binds and the runtime directory. Every path inside the image is
// resolved relative to the image's root fd, never through the host's view.
import Glibc
import LoginChrootCore

/// Executes a RootPlan below the staging directory, inside the new
/// namespace. Every path inside the image is resolved relative to the image's
/// root fd, never through the host's view of it.
public struct RootAssembler {
    let plan: RootPlan
    let staging: String
    let log: (String) -> Void
    /// With SELinux on: what the files written into the root are labelled
    /// from (the file each replaces, else the policy). Nil without SELinux.
    let labels: FileLabels?

    public init(plan: RootPlan, staging: String, log: @escaping (String) -> Void, labels: FileLabels?) {
        self.plan = plan; self.staging = staging; self.log = log; self.labels = labels
    }

    public func mountRoot() throws {
        for mount in plan.rootMounts { try perform(mount) }
    }

    public func assemble() throws {
        try mountRoot()
        let rootPath = joinPath(staging, plan.rootSubpath)
        // Device nodes in the image open nothing; the host's /dev is bound
        // in below with its own flags.
        if plan.isSessionRoot { try Mounts.harden(rootPath, nosuid: plan.nosuid) }
        let root = try Descriptor.openDirectory(rootPath)
        // Edits first, while the snapshot is the only filesystem in the root:
        // no write can land on a bound host path.
        try writeFiles(into: root)
        for bind in plan.binds { try bindIn(bind, root: root) }
        if let runtime = plan.runtimeDirectory { try mountRuntimeDirectory(runtime, root: root) }
        // The client's next step is to run the shell in here; without it
        // the login would fail there with no reason in syslog.
        if !plan.shell.isEmpty, (try? root.openInside(plan.shell, Descriptor.pathOnly)) == nil {
            throw SetupError("the login shell \(plan.shell) is not in the image",
                             fix: "install it in master and publish, or give the user a shell the image has")
        }
    }

    /// The edits, then the marker, each replacing its file in the image.
    func writeFiles(into root: Descriptor) throws {
        for edit in plan.edits { try apply(edit, root: root) }
        if let marker = plan.marker {
            try writeFile(root: root, path: RootMarker.path, bytes: Array(marker.serialized().utf8), mode: 0o644)
        }
    }

    private func stagingPath(_ path: String) -> String { path.hasPrefix("/") ? path : joinPath(staging, path) }

    private func perform(_ mount: MountSpec) throws {
        switch mount {
        case .bind(let source, let target):
            try Mounts.bind(source, onto: stagingPath(target), recursive: false)
        case .tmpfs(let target, let size):
            try Mounts.mount(source: "loginchroot", target: stagingPath(target), type: "tmpfs",
                             flags: UInt(MS_NOSUID) | UInt(MS_NODEV), data: "size=\(size),mode=0755")
        case .directory(let path):
            let full = stagingPath(path)
            try sys("mkdir", full) { mkdir(full, 0o755) }
        case .overlay(let lower, let upper, let work, let target):
            try Mounts.mount(source: "loginchroot", target: stagingPath(target), type: "overlay", flags: 0,
                             data: "lowerdir=\(lower),upperdir=\(stagingPath(upper)),workdir=\(stagingPath(work))")
        case .device(let source, let type, let options, let target):
            try Mounts.mount(source: source, target: stagingPath(target), type: type, flags: 0,
                             data: options.isEmpty ? nil : options)
        }
    }

    private func bindIn(_ bind: BindEntry, root: Descriptor) throws {
        let source: Descriptor
        do {
            source = try Files.openHostPath(bind.source, user: plan.marker?.uid ?? 0)
        } catch let error as SystemError where error.errno == ENOENT {
            if bind.optional { return }
            throw SetupError("bind source \(bind.source) does not exist on the host",
                             fix: "create it, or mark the bind optional in [binds]")
        }
        let isDirectory = (try source.stat().st_mode & S_IFMT) == S_IFDIR
        let target = try makeMountPoint(root: root, path: bind.target, directory: isDirectory)
        try Mounts.bind(source.procPath, onto: target.procPath, recursive: bind.recursive)
        // Reopen: the old fd names the directory under the new mount.
        let mounted = try root.openInside(bind.target, Descriptor.pathOnly, noSymlinks: true)
        if bind.readOnly { try Mounts.makeReadOnly(mounted.procPath, recursive: bind.recursive) }
        let flag: Int
        switch bind.propagation {
        case .private: flag = MS_PRIVATE
        case .slave: flag = MS_SLAVE
        case .shared: flag = MS_SHARED
        }
        try Mounts.setPropagation(mounted.procPath, flag, recursive: bind.recursive)
    }

    /// Opens (creating if needed) a mount point inside the root. Symlinks are
    /// refused: an image whose /tmp points elsewhere must not get the host's
    /// /tmp bound somewhere unexpected.
    private func makeMountPoint(root: Descriptor, path: String, directory: Bool) throws -> Descriptor {
        do {
            return try openInImage(root: root, path: path, Descriptor.pathOnly, to: "bind over")
        } catch let error as SystemError where error.errno == ENOENT {
            var current = try root.openInside(".", O_RDONLY | O_DIRECTORY, noSymlinks: true)
            let components = path.split(separator: "/").map(String.init)
            for (index, component) in components.enumerated() {
                let last = index == components.count - 1
                if last && !directory {
                    // O_EXCL: never open what appeared meanwhile (a FIFO would block).
                    if let fd = try sys("openat", path, unless: EEXIST, {
                        openat(current.raw, component, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o644)
                    }) { close(fd) }
                } else {
                    try sys("mkdirat", path, unless: EEXIST) { mkdirat(current.raw, component, 0o755) }
                }
                if !last {
                    current = Descriptor(adopting: try sys("openat", path) {
                        openat(current.raw, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    })
                }
            }
            return try root.openInside(path, Descriptor.pathOnly, noSymlinks: true)
        }
    }

    /// The root's own /run/user/UID: a tmpfs of the user's, mode 0700, that
    /// dies with the root. Nothing of the host's runtime directory (the
    /// user manager's and the session bus's sockets) is reachable inside.
    private func mountRuntimeDirectory(_ runtime: RuntimeDirectory, root: Descriptor) throws {
        let target = try makeMountPoint(root: root, path: runtime.path, directory: true)
        var options = "mode=0700,uid=\(runtime.uid),gid=\(runtime.gid),size=\(runtime.size)"
        // rootcontext, not context: the user manager's sockets inside get
        // their own labels, as in the runtime directory logind mounts.
        if let label = try labels?.policyLabel(for: runtime.path, mode: S_IFDIR | 0o700) {
            options += ",rootcontext=\"\(label)\""
        }
        try Mounts.mount(source: "loginchroot-runtime", target: target.procPath, type: "tmpfs",
                         flags: UInt(MS_NOSUID) | UInt(MS_NODEV), data: options)
    }

    private func apply(_ edit: RootFileEdit, root: Descriptor) throws {
        switch edit {
        case .copyFromHost(let path):
            guard let source = try? Descriptor.open(path, O_RDONLY | O_NONBLOCK), let info = try? source.stat(),
                  (info.st_mode & S_IFMT) == S_IFREG,
                  let bytes = try? source.readAll(limit: 1 << 20) else {
                log("host file \(path) not readable; not copied into the root")
                return
            }
            // Same permissions as on the host (never setuid/setgid).
            try writeFile(root: root, path: path, bytes: bytes, mode: info.st_mode & 0o777)
        case .replaceEntry(let file, let name, let line):
            let text = try readFile(root: root, path: file)
            if let updated = replacingEntry(in: text, name: name, line: line) {
                try writeFile(root: root, path: file, bytes: Array(updated.utf8), mode: 0o644)
            }
        case .reconcileGroups(let user, let groups):
            let text = try readFile(root: root, path: "/etc/group")
            if let updated = reconcilingGroups(in: text, user: user, groups: groups) {
                try writeFile(root: root, path: "/etc/group", bytes: Array(updated.utf8), mode: 0o644)
            }
        }
    }

    /// Opens `path` inside the root without following any symlink: one in
    /// the image could point at the host. Such a path is refused, by name.
    private func openInImage(root: Descriptor, path: String, _ flags: Int32, to action: String) throws -> Descriptor {
        do {
            return try root.openInside(path, flags, noSymlinks: true)
        } catch let error as SystemError where error.errno == ELOOP {
            throw SetupError("\(path) in the image is a symlink, or a directory on the way to it is; refusing to \(action) it",
                             fix: "replace the symlink in master with a real file or directory and publish")
        }
    }

    private func readFile(root: Descriptor, path: String) throws -> String {
        do {
            // O_NONBLOCK: a FIFO in the image must not hang the login.
            let file = try openInImage(root: root, path: path, O_RDONLY | O_NONBLOCK, to: "read")
            guard (try file.stat().st_mode & S_IFMT) == S_IFREG else {
                throw SetupError("\(path) in the image is not a regular file", fix: "replace it in master and publish")
            }
            return String(decoding: try file.readAll(limit: 16 << 20), as: UTF8.self)
        } catch let error as SystemError where error.errno == ENOENT {
            return ""
        }
    }

    /// Replaces `path` inside the root (a symlink there is replaced, never followed).
    private func writeFile(root: Descriptor, path: String, bytes: [UInt8], mode: mode_t) throws {
        var components = path.split(separator: "/").map(String.init)
        guard let name = components.popLast() else { throw SystemError(call: "open", path: path, errno: EINVAL) }
        let parent = try openInImage(root: root, path: "/" + components.joined(separator: "/"), O_RDONLY | O_DIRECTORY,
                                     to: "write \(path) through")
        let temporary = "." + name + ".loginchroot"
        _ = unlinkat(parent.raw, temporary, 0)
        let create = {
            Descriptor(adopting: try sys("openat", path) {
                openat(parent.raw, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            })
        }
        let fd: Descriptor
        if let labels, let label = try label(for: path, replacing: name, in: parent, labels: labels) {
            fd = try labels.creatingFiles(labelled: label, path: path, create)
        } else {
            fd = try create()
        }
        try fd.writeAll(bytes, path: path)
        _ = fchmod(fd.raw, mode)
        try sys("renameat", path) { renameat(parent.raw, temporary, parent.raw, name) }
    }

    /// The label of the file a write replaces (a symlink or a device is not
    /// opened), else the policy's for a new file at `path`.
    private func label(for path: String, replacing name: String, in parent: Descriptor,
                       labels: FileLabels) throws -> String? {
        let fd = openat(parent.raw, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        if fd >= 0, let label = labels.label(of: Descriptor(adopting: fd)) { return label }
        return try labels.policyLabel(for: path, mode: S_IFREG)
    }
}
