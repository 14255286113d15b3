// On a machine with SELinux on, every generation is labelled for the loaded
// policy when it is published: a root's files keep their generation's labels,
// and an unlabelled image fails under enforcing mode (sshd cannot start the
// user's shell in the user's domain from an unlabeled_t file).
import Glibc
import LoginChrootCore
import LoginChrootPlatform

public enum ImageLabels {
    /// Labels master, then publishes it (publish, update), from the host
    /// namespace: an erofs generation is mounted there.
    public static func publish(_ backend: SnapshotBackend, state: StateStore,
                               log: @escaping (String) -> Void) throws -> Generation {
        try labelMaster(backend, state: state, log: log)
        return try backend.publish()
    }

    /// Publishes the tree `checkout` writes (the fleet's commit) without
    /// master, labelled when SELinux is on: then copied, not hardlinked
    /// (setfiles would relabel the repository's objects through the
    /// links). nil where the backend publishes from master only.
    public static func publish(_ backend: SnapshotBackend,
                               tree checkout: (_ directory: String, _ hardlinked: Bool) throws -> Void) throws -> Generation? {
        let labelling = SELinux.isEnabled()
        return try backend.publish(tree: { directory, mayHardlink in
            try checkout(directory, mayHardlink && !labelling)
            if labelling { try label(directory) }
        })
    }

    /// Labels master when SELinux is on (and after `master run`, whose
    /// package manager labels nothing: it sees SELinux as off). `mountedAt`:
    /// where master is mounted in this thread's namespace already (init);
    /// else it is mounted in a namespace of its own, and the thread comes
    /// back to its namespace after.
    public static func labelMaster(_ backend: SnapshotBackend, state: StateStore, mountedAt: String? = nil,
                                   log: @escaping (String) -> Void) throws {
        guard SELinux.isEnabled() else { return }
        if let mountedAt { return try label(mountedAt) }
        try Roots.returningToThisNamespace { try label(try mountPrivately(try backend.masterLayout(), state: state, log: log)) }
    }

    /// Throws, naming the path, when a file of `generation` does not carry
    /// the type the loaded policy gives its path (unlabelled, or labelled
    /// for another policy). Mounts it in this thread's namespace (dm-thin:
    /// read-only, no journal replay) and only reads.
    public static func checkGeneration(_ generation: Generation, of backend: SnapshotBackend, state: StateStore,
                                       log: @escaping (String) -> Void) throws {
        guard let labels = SELinux.labelsIfEnabled() else { return }
        let root = try Descriptor.openDirectory(try mountPrivately(try backend.generationLayout(generation), state: state,
                                                                   log: log))
        for path in ["/", "/etc", "/etc/passwd", "/usr/bin"] {
            guard let file = try? root.openInside(path, O_RDONLY | O_NONBLOCK, noSymlinks: true),
                  let info = try? file.stat(), let want = try labels.policyLabel(for: path, mode: info.st_mode)
            else { continue }
            let found = labels.label(of: file) ?? "unlabelled or labelled for another policy"
            if selinuxType(of: found) != selinuxType(of: want) {
                throw SetupError("\(path) in generation \(generation) is \(found), where the loaded policy gives \(want): "
                                 + "its roots carry wrong SELinux labels (enforcing mode refuses such logins)",
                                 fix: "loginchroot publish (it labels master first, and new logins get the labelled generation)")
            }
        }
    }

    /// Mounts an image in this thread's own namespace; returns where its root is.
    public static func mountPrivately(_ layout: RootLayout, state: StateStore, log: @escaping (String) -> Void) throws -> String {
        try Roots.mountPrivately(layout.mounts, rootSubpath: layout.rootSubpath, staging: state.stagingDir, log: log)
    }

    /// The type field of a context (user:role:type:level).
    private static func selinuxType(of context: String) -> Substring {
        let fields = context.split(separator: ":")
        return fields.count >= 3 ? fields[2] : context[...]
    }

    /// setfiles with `root` as the alternate root: each file gets the label
    /// the loaded policy's file_contexts give its path inside the image.
    static func label(_ root: String) throws {
        let contexts = try SELinux.fileContextsPath()
        let outcome = try Processes.runQuietly(["setfiles", "-F", "-r", root, contexts, root])
        guard outcome.status == 0 else {
            throw SetupError("setfiles could not label master for SELinux (exit status \(outcome.status)):\n\(outcome.output)",
                             fix: "check that \(contexts) is the loaded policy's (sestatus), then publish again")
        }
    }
}
