// device-mapper through libdevmapper (never dmsetup or lvm): create, remove,
// suspend, resume, target messages, info and status. Errors carry the
// operation, the device name, errno and libdevmapper's own message.
import CDeviceMapper
import Glibc
import LoginChrootCore

public enum DeviceMapper {
    public struct Info: Equatable {
        public var deferredRemove: Bool
        public var suspended: Bool
        public var major: UInt32
        public var minor: UInt32
    }

    /// Call once per process before anything else here. Where udev runs,
    /// every change waits on its udev cookie; elsewhere (the VM lab, early
    /// boot) libdevmapper makes the /dev/mapper nodes itself.
    public static func setUp() {
        // A failed load is reported by the first call (ELIBACC, with the reason).
        _ = lcdm_setup(Files.exists("/run/udev/control") ? 1 : 0)
    }

    public static func devicePath(_ name: String) -> String { "/dev/mapper/" + name }

    public static func create(_ name: String, uuid: String, target: String, sectors: UInt64, parameters: String) throws {
        try call("dm create", name) { lcdm_create(name, uuid, target, sectors, parameters) }
    }

    /// Removes `name`. With `deferred`, a device still open is removed by
    /// the kernel when its last user closes it (the call then succeeds).
    public static func remove(_ name: String, deferred: Bool = false) throws {
        try call(deferred ? "dm deferred remove" : "dm remove", name) { lcdm_remove(name, deferred ? 1 : 0) }
    }

    public static func suspend(_ name: String) throws { try call("dm suspend", name) { lcdm_suspend(name) } }
    public static func resume(_ name: String) throws { try call("dm resume", name) { lcdm_resume(name) } }

    public static func message(_ name: String, _ text: String) throws {
        try call("dm message '\(text)'", name) { lcdm_message(name, text) }
    }

    /// nil when no device of that name exists.
    public static func info(_ name: String) throws -> Info? {
        var raw = lcdm_info()
        try call("dm info", name) { lcdm_info(name, &raw) }
        guard raw.exists != 0 else { return nil }
        return Info(deferredRemove: raw.deferred_remove != 0, suspended: raw.suspended != 0, major: raw.major, minor: raw.minor)
    }

    public static func status(_ name: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        try call("dm status", name) { lcdm_status(name, &buffer, buffer.count) }
        return string(fromCBuffer: buffer)
    }

    /// The dm name and uuid of the block device at `path`, from sysfs;
    /// nil when it is not a device-mapper device.
    public static func identity(ofDevice path: String) -> (name: String, uuid: String)? {
        var info = Glibc.stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFBLK else { return nil }
        let dev = UInt64(info.st_rdev)  // glibc's makedev encoding
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
        let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
        let sysfs = "/sys/dev/block/\(major):\(minor)/dm/"
        guard let name = try? Files.read(sysfs + "name") else { return nil }
        return (name.trimmed, ((try? Files.read(sysfs + "uuid")) ?? "").trimmed)
    }

    private static func call(_ what: String, _ name: String, _ body: () -> Int32) throws {
        if body() == 0 { return }
        let code = errno
        throw SystemError(call: what, path: name, errno: code == 0 ? EIO : code,
                          detail: String(cString: lcdm_last_error()).trimmed)
    }
}
