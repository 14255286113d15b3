// The configuration model and its defaults. Every key is documented in
// doc/loginchroot.conf.5 and in the example config; keep them in step.

public enum BackendKind: String, CaseIterable, Sendable {
    case btrfs
    case overlay
    case dmThin = "dm-thin"
}

/// The filesystem made on dm-thin volumes. Never btrfs: its snapshots
/// would share a filesystem id, which confuses the kernel.
public enum ThinFilesystem: String, Sendable {
    case ext4
    case xfs

    /// xfs refuses to mount a second filesystem with the same UUID, and
    /// every snapshot of master has master's UUID.
    public var mountOptions: String { self == .xfs ? "nouuid" : "" }
}

public enum SessionMode: String, Sendable {
    /// All logins of a user share one root; it dies with the user's last session.
    case perUser = "per-user"
    /// Every PAM session gets its own root.
    case perSession = "per-session"
}

public enum ErrorPolicy: String, Sendable {
    /// A login whose root cannot be made is refused (fail closed).
    case deny
    /// A login whose root cannot be made proceeds on the host root.
    case allow
}

public enum Propagation: String, Sendable {
    case `private`
    case slave
    case shared
}

/// One host path bound into every session root.
public struct BindEntry: Equatable, Sendable {
    public var source: String
    public var target: String
    public var readOnly = false
    public var recursive = false
    public var propagation: Propagation = .slave
    /// A missing source is skipped instead of failing the login.
    public var optional = false

    public init(source: String, target: String? = nil, readOnly: Bool = false, recursive: Bool = false,
                propagation: Propagation = .slave, optional: Bool = false) {
        self.source = source
        self.target = target ?? source
        self.readOnly = readOnly
        self.recursive = recursive
        self.propagation = propagation
        self.optional = optional
    }

    /// The same entry with `%u` replaced by the user's uid.
    public func resolved(uid: UInt32) -> BindEntry {
        var copy = self
        copy.source = source.replacing(token: "%u", with: String(uid))
        copy.target = target.replacing(token: "%u", with: String(uid))
        return copy
    }
}

/// What an overlay root's lower layer, its generation, is.
public enum OverlayLower: String, Sendable {
    /// A directory tree in the store, per generation.
    case directory
    /// An erofs image file per generation, mounted once (read-only) where
    /// every root of that generation takes it as its lower layer, so they
    /// share one page cache.
    case erofs
}

public enum OverlayUpper: Equatable, Sendable {
    /// The upper layer lives on a tmpfs inside the session's namespace.
    case tmpfs(sizeBytes: UInt64)
    /// The upper layer lives under this host directory, one subdirectory per root.
    case directory(String)
}

public struct Config: Equatable, Sendable {
    public static let defaultPath = "/etc/loginchroot/loginchroot.conf"

    /// Names this instance (its state directory) in the names of the
    /// cgroups it makes, so gc never touches another instance's sessions.
    public var instanceTag: String { fnv1aHex(stateDir) }

    // [store]
    public var backend: BackendKind = .btrfs
    public var storePath = "/var/lib/loginchroot"
    /// btrfs: a loop file mounted at `storePath` by `loginchroot start`; empty
    /// when `storePath` is already a btrfs filesystem the admin mounts.
    public var storeImage = "/var/lib/loginchroot.img"
    public var storeImageSize: UInt64 = 8 << 30
    public var keepGenerations = 2
    /// New roots are refused while less than this share of the space they
    /// write to is free (dm-thin: the pool's data or metadata; btrfs: the
    /// store; overlay: a directory upper's filesystem).
    public var minFreePercent = 10
    /// btrfs: the most one root may write (a simple-quota limit on its
    /// subvolume), so one user who fills their root leaves the rest of the
    /// store to everyone else. A quarter of the default store image.
    public var rootSize: UInt64 = 2 << 30

    // [session]
    public var mode: SessionMode = .perUser
    public var onError: ErrorPolicy = .deny
    /// root, and the accounts Debian 12's display managers run their
    /// greeters as (gdm3, lightdm, greetd, sddm): a greeter is the login
    /// screen, not a session of a user, and greetd's greeter goes through
    /// common-session.
    public var exemptUsers: [String] = ["root", "Debian-gdm", "lightdm", "_greetd", "sddm"]
    public var exemptGroups: [String] = []
    public var stateDir = "/run/loginchroot"
    public var addUserEntries = true
    public var copyFiles: [String] = ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]
    public var killTimeoutSeconds = 5
    /// How long a login, a logout or a command waits for the state lock
    /// (a login then follows on_error; a logout is left to gc).
    public var lockTimeoutSeconds = 15
    /// Whether setuid and setgid bits of the image's programs work inside a
    /// root (su, sudo, and unix_chkpwd, which screen lockers need). They
    /// decide who becomes root in the root, and root there is root of the
    /// machine's kernel; `setuid = no` mounts roots nosuid.
    public var allowSetuid = true
    /// Size of the tmpfs each root gets as its own /run/user/UID (as
    /// logind's RuntimeDirectorySize: a share of RAM, or bytes).
    public var runtimeDirectorySize = "10%"

    // [overlay]
    /// nil: the upper layer is a tmpfs of `overlayTmpfsSize`.
    public var overlayUpperDirectory: String?
    public var overlayTmpfsSize: UInt64 = 1 << 30
    public var overlayLower: OverlayLower = .directory
    public var overlayUpper: OverlayUpper {
        overlayUpperDirectory.map { .directory($0) } ?? .tmpfs(sizeBytes: overlayTmpfsSize)
    }

    // [dm-thin]
    /// Prefix of every device-mapper name this store uses.
    public var poolName = "loginchroot"
    /// Block devices for the pool; empty means loop files in the store directory.
    public var dataDevice = ""
    public var metadataDevice = ""
    /// Sizes of the loop files made by `init` when no devices are named.
    public var dataSize: UInt64 = 8 << 30
    public var metadataSize: UInt64 = 128 << 20
    /// Virtual size of master, and so of every generation and session: the
    /// most one root can take of the pool. A quarter of the default pool, so
    /// one user who fills their root leaves room for everyone else.
    public var volumeSize: UInt64 = 2 << 30
    public var thinBlockSize: UInt64 = 64 << 10
    public var filesystem: ThinFilesystem = .ext4

    // [binds]
    public var binds: [BindEntry] = Config.defaultBinds

    // [master]
    public var updateCommand = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y dist-upgrade"

    // [fleet]: OSTree delivery of the build host's generations (FleetExport).
    /// The OSTree branch every generation is committed to.
    public var fleetRef = "loginchroot/golden"
    /// The GPG key (fingerprint or id) the build host signs commits and the
    /// summary with; empty on login machines.
    public var fleetSigningKey = ""
    /// The GnuPG home directory that holds the signing key.
    public var fleetGPGHome = "/etc/loginchroot/gpg"
    /// How many commits of the branch the repository keeps (older ones are
    /// pruned after each export; a static delta reaches each from its parent).
    public var fleetKeepCommits = 5
    /// Where a login machine pulls from (the build host's repository, on a
    /// web server); empty on the build host.
    public var fleetURL = ""
    /// The build host's public key, which every pulled commit and summary
    /// must be signed with.
    public var fleetKeyring = "/etc/loginchroot/fleet.asc"
    /// How many times `update --pull` tries (each resumes the last).
    public var fleetPullAttempts = 5

    public init() {}

    public static let defaultBinds: [BindEntry] = [
        BindEntry(source: "/proc", recursive: true),
        BindEntry(source: "/sys", readOnly: true, recursive: true),
        // Writable as on the host, where the files' owners decide: the user
        // manager makes its services' cgroups in the subtree systemd
        // delegated to the user.
        BindEntry(source: "/sys/fs/cgroup", recursive: true, optional: true),
        BindEntry(source: "/dev"),
        BindEntry(source: "/dev/pts"),
        BindEntry(source: "/dev/shm"),
        BindEntry(source: "/tmp"),
        BindEntry(source: "/var/tmp"),
        BindEntry(source: "/home", recursive: true),  // automounted and NFS homes below it
        // Login records and the system log: sshd's monitor and login stay
        // in the root after open_session and write utmp, wtmp and lastlog
        // there, and log through /dev/log, which on systemd hosts points
        // into /run. Root-owned; users can read them as on the host.
        BindEntry(source: "/run/utmp", optional: true),
        BindEntry(source: "/var/log/wtmp", optional: true),
        BindEntry(source: "/var/log/lastlog", optional: true),
        BindEntry(source: "/run/systemd/journal/dev-log", optional: true),
        BindEntry(source: "/run/systemd/journal/socket", optional: true),
        BindEntry(source: "/run/systemd/journal/stdout", optional: true),
        // The host's D-Bus system bus: loginctl, busctl, timedatectl and
        // hostnamectl reach the host's services from a root, with the same
        // rights (polkit) as the user has on the host. And systemd's marker
        // of a booted system (an empty directory), without which systemd's
        // tools refuse to talk to it at all.
        BindEntry(source: "/run/dbus/system_bus_socket", optional: true),
        BindEntry(source: "/run/systemd/system", readOnly: true, optional: true),
        // logind's state as sd-login reads it (world-readable on the host):
        // pam_systemd in the user manager's stack, which runs after the
        // module, sets XDG_RUNTIME_DIR only when it sees logind; so do
        // desktop programs asking which session they are in.
        BindEntry(source: "/run/systemd/seats", readOnly: true, optional: true),
        BindEntry(source: "/run/systemd/sessions", readOnly: true, optional: true),
        BindEntry(source: "/run/systemd/users", readOnly: true, optional: true),
        // Where a service tells systemd it is ready (sd_notify): the user
        // manager, a Type=notify unit, tells PID 1 from inside the root.
        // World-writable on the host too; systemd heeds only its units.
        BindEntry(source: "/run/systemd/notify", optional: true),
    ]

    /// Added to a session's binds on a machine with SELinux on. The kernel
    /// enforces the host's policy whatever the image carries, and Debian's
    /// stacks run pam_selinux open after the module, inside the root: it
    /// computes the user's context from the host's policy configuration
    /// (read-only), and sees SELinux on only through a writable selinuxfs
    /// (libselinux takes a read-only one, as /sys is bound, for "off").
    public static let selinuxBinds: [BindEntry] = [
        BindEntry(source: "/sys/fs/selinux"),
        BindEntry(source: "/etc/selinux", readOnly: true, recursive: true),
    ]

    /// Binds for `loginchroot master run`: enough for a package manager,
    /// none of the users' data.
    public static let masterBinds: [BindEntry] = [
        BindEntry(source: "/proc", recursive: true),
        BindEntry(source: "/sys", readOnly: true, recursive: true),
        BindEntry(source: "/dev"),
        BindEntry(source: "/dev/pts"),
    ]
}

/// 32-bit FNV-1a of `text`: short, stable, not cryptographic.
public func fnv1a(_ text: String) -> UInt32 {
    var hash: UInt32 = 2_166_136_261
    for byte in text.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
    return hash
}

/// fnv1a as 8 hex digits: a short, stable tag.
func fnv1aHex(_ text: String) -> String {
    let digits = String(fnv1a(text), radix: 16)
    return String(repeating: "0", count: 8 - digits.count) + digits
}
