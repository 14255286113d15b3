// The Swift side of pam_loginchroot.so. Called only from CModule/pam_shim.c.
// Nothing here may crash, print, or block forever: it runs inside sshd,
// login and gdm. Logs go to syslog through PAM; users see one short line.
import CPamShim
import Glibc
import LoginChroot
import LoginChrootCore
import LoginChrootPlatform

struct PamContext {
    let handle: OpaquePointer?
    let flags: Int32
    let arguments: ModuleArguments

    init(_ handle: OpaquePointer?, _ flags: Int32, _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafePointer<CChar>?>?) {
        self.handle = handle
        self.flags = flags
        var raw: [String] = []
        for index in 0..<Int(max(0, min(argc, 64))) {
            if let argument = argv?[index] { raw.append(String(decoding: bytes(argument, limit: 4096), as: UTF8.self)) }
        }
        arguments = ModuleArguments.parse(raw)
        for ignored in arguments.ignored { log(LOG_WARNING, "unknown module argument ignored: \(ignored)") }
    }

    func log(_ priority: Int32, _ message: String) {
        if priority == LOG_DEBUG && !arguments.debug { return }
        lc_pam_log(handle, priority, String(message.prefix(1024)))
    }

    func tellUser(_ message: String) { lc_pam_tell_user(handle, flags, message) }

    func userName() -> (raw: [UInt8], name: UserName?) {
        guard let pointer = lc_pam_item_string(handle, PAM_USER) else { return ([], nil) }
        let raw = bytes(pointer, limit: 1024)
        return (raw, UserName(validating: raw))
    }

    func serviceName() -> String? {
        lc_pam_item_string(handle, PAM_SERVICE).map { String(decoding: bytes($0, limit: 256), as: UTF8.self) }
    }

    /// Root always gets in, even when the config is broken, so an admin can repair.
    func isSuperuser(_ name: UserName?) -> Bool {
        guard let name, let account = try? Accounts.lookup(name) else { return false }
        return account.uid == 0
    }

    func manager(_ config: Config) -> SessionManager {
        SessionManager(config: config, log: { self.log(LOG_NOTICE, $0) })
    }
}

/// Copies a C string of at most `limit` bytes (a hostile PAM item is not trusted to be short).
func bytes(_ pointer: UnsafePointer<CChar>, limit: Int) -> [UInt8] {
    let length = strnlen(pointer, limit + 1)
    return pointer.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) }
}

@_cdecl("loginchroot_open_session")
public func loginchrootOpenSession(_ handle: OpaquePointer?, _ flags: Int32, _ argc: Int32,
                                   _ argv: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    let pam = PamContext(handle, flags, argc, argv)
    let user = pam.userName()
    guard let name = user.name else {
        pam.log(LOG_ERR, "refusing session: PAM_USER is missing or not a valid user name (\(user.raw.count) bytes)")
        pam.tellUser("Your user name cannot be used for a session root.")
        return PAM_SESSION_ERR
    }
    // Inside a root already (an image whose own PAM stack has this module):
    // the root's owner stays in it, anyone else is refused. Decided before
    // the config is read: there may be none in here.
    if Files.exists(RootMarker.path) {
        let uid = (try? Accounts.lookup(name))?.uid
        let decision = Policy.decideInside(markerText: try? Files.read(RootMarker.path), user: name, uid: uid)
        if case .refuse(let reason) = decision {
            pam.log(LOG_ERR, "refusing session: \(reason)")
            pam.tellUser("You cannot log in to another account inside a session root.")
            return PAM_SESSION_ERR
        }
        pam.log(LOG_DEBUG, "session of \(name) stays in the root it is in: roots never nest")
        return PAM_IGNORE
    }
    let config: Config
    do {
        config = try ConfigLoader.load(pam.arguments.configPath)
    } catch {
        if pam.isSuperuser(name) {
            pam.log(LOG_ERR, "\(error); letting uid 0 in on the host root")
            return PAM_IGNORE
        }
        pam.log(LOG_ERR, "refusing session of \(name): \(error)")
        pam.tellUser("Login roots are misconfigured on this machine; please contact the administrator.")
        return PAM_SESSION_ERR
    }
    switch pam.manager(config).open(user: name, caller: SessionCaller(pamService: pam.serviceName())) {
    case .entered(let reference, let hostNamespace):
        if lc_pam_save_session(handle, reference, hostNamespace) != PAM_SUCCESS {
            pam.log(LOG_ERR, "could not hand root \(reference) to close_session; 'loginchroot gc' will reclaim it")
        }
        return PAM_SUCCESS
    case .leftAlone(let reason):
        pam.log(LOG_DEBUG, "session of \(name) stays on the host root: \(reason)")
        return PAM_IGNORE
    case .failed(let userMessage, let reason):
        if config.onError == .allow {
            pam.log(LOG_ERR, "\(reason); on_error=allow, so the session continues on the host root")
            return PAM_IGNORE
        }
        pam.log(LOG_ERR, "refusing session: \(reason)")
        pam.tellUser(userMessage)
        return PAM_SESSION_ERR
    }
}

@_cdecl("loginchroot_close_session")
public func loginchrootCloseSession(_ handle: OpaquePointer?, _ flags: Int32, _ argc: Int32,
                                    _ argv: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    // close_session never fails the stack: whatever is left, gc reclaims.
    let pam = PamContext(handle, flags, argc, argv)
    var hostNamespace: Int32 = -1
    guard let pointer = lc_pam_load_session(handle, &hostNamespace) else {
        pam.log(LOG_DEBUG, "close_session: this PAM handle opened no root")
        return PAM_IGNORE
    }
    let reference = String(decoding: bytes(pointer, limit: 256), as: UTF8.self)
    // Out of the root first: the config and the state live on the host.
    guard hostNamespace >= 0 else {
        pam.log(LOG_WARNING, "root \(reference): close_session without the host namespace saved at open; 'loginchroot gc' will reclaim the root")
        return PAM_SUCCESS
    }
    do { try Roots.returnToHost(hostNamespace) } catch {
        // EPERM: close_session without root privileges.
        pam.log(LOG_WARNING, "root \(reference): cannot leave the session namespace (\(error)); 'loginchroot gc' will reclaim the root")
        return PAM_SUCCESS
    }
    CrashPoint.reached("close.on-host")
    let config: Config
    do { config = try ConfigLoader.load(pam.arguments.configPath) } catch {
        pam.log(LOG_ERR, "close_session of root \(reference): \(error); leaving it for 'loginchroot gc'")
        return PAM_SUCCESS
    }
    switch pam.manager(config).close(reference: reference) {
    case .closed(let destroyed):
        pam.log(LOG_DEBUG, "closed session in root \(reference)\(destroyed ? "; root destroyed" : "")")
    case .nothingToDo(let reason):
        pam.log(LOG_DEBUG, "close_session: \(reason)")
    case .deferred(let reason):
        pam.log(LOG_WARNING, "close_session: \(reason)")
    }
    return PAM_SUCCESS
}
