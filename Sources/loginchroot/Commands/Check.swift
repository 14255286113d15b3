import ArgumentParser
import Glibc
import LoginChroot
import LoginChrootCore
import LoginChrootPlatform

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the config and the environment; name each problem and its fix.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: OutputOptions

    struct Finding: Encodable {
        var ok: Bool
        var what: String
        var fix: String

        enum CodingKeys: String, CodingKey { case ok, what = "check", fix }
    }

    func run() throws {
        try requireRoot()
        var findings: [Finding] = []
        func record(_ what: String, _ body: () throws -> Void) {
            do { try body(); findings.append(Finding(ok: true, what: what, fix: "")) } catch let error as SetupError {
                findings.append(Finding(ok: false, what: "\(what): \(error.problem)", fix: error.fix))
            } catch let error as ConfigError {
                var where_ = error.file
                if error.line > 0 { where_ += ":\(error.line)" }
                findings.append(Finding(ok: false, what: "\(what): \(where_): \(error.problem)", fix: error.fix))
            } catch {
                findings.append(Finding(ok: false, what: "\(what): \(error)", fix: "see the message"))
            }
        }
        var config: Config?
        record("config \(global.config)") { config = try ConfigLoader.load(global.config) }
        if let config {
            record("kernel supports \(config.backend.rawValue)") { try Backends.make(config).checkKernel() }
            record("store \(config.storePath)") { try Backends.make(config).checkStore() }
            record("current generation") { _ = try Backends.make(config).currentGeneration() }
            record("space one root can take") {
                let usage = try Backends.make(config).usage()
                guard let limit = usage.rootLimit, limit.bytes * 2 > usage.totalBytes else { return }
                throw SetupError("a root can take \(limit.bytes >> 20) MiB, more than half of the \(usage.totalBytes >> 20) MiB the roots share: one user who fills a root can fill it for everyone",
                                 fix: limit.howToLower)
            }
            record("state directory \(config.stateDir)") {
                if Files.exists(config.stateDir) { try Files.checkOwnedByRoot(config.stateDir, kind: "state directory") }
            }
            let unreadable = Files.exists(config.stateDir)
                ? ((try? StateStore(directory: config.stateDir).scan().unreadable) ?? []) : []
            for name in unreadable {
                record("state record \(joinPath(joinPath(config.stateDir, "roots"), name))") {
                    throw SetupError("it does not parse; gc leaves it and its root alone",
                                     fix: "inspect it; end its processes, then remove it and run 'loginchroot gc'")
                }
            }
            record("programs init needs") { try RequiredPrograms.require(RequiredPrograms.forStore(Backends.make(config))) }
            for bind in config.binds where !bind.optional && !bind.source.containsLiteral("%u") {
                record("bind source \(bind.source)") {
                    guard Files.exists(bind.source) else {
                        throw SetupError("\(bind.source) does not exist", fix: "create it or mark the bind optional")
                    }
                }
            }
        }
        record("syslog socket /dev/log") {
            guard Files.exists("/dev/log") else {
                throw SetupError("no /dev/log: the module's reasons for refusing a login are lost",
                                 fix: "under systemd: systemctl start systemd-journald-dev-log.socket (then read the reasons with 'journalctl -g pam_loginchroot'); without it: apt install rsyslog")
            }
        }
        record("PAM services that use the module") { try checkPamServices() }
        if Files.exists("/run/systemd/system") {
            record("the user manager (systemd-user) gets a root") {
                guard pamService("systemd-user", reaches: 0) else {
                    throw SetupError("the systemd-user PAM service does not reach the module: the user manager and what it starts run on the host root",
                                     fix: "pam-auth-update --enable loginchroot (its profile covers common-session-noninteractive, which systemd-user includes)")
                }
                // Inside its root the manager goes back to the cgroup systemd
                // delegated to it through the root's /sys/fs/cgroup.
                if let config, !config.binds.contains(where: { $0.target == "/sys/fs/cgroup" && !$0.readOnly && $0.recursive }) {
                    throw SetupError("[binds] in \(global.config) has no writable /sys/fs/cgroup: in its root the user manager cannot go back to the cgroup systemd delegated to it, where it runs the user's services",
                                     fix: "add 'bind = /sys/fs/cgroup rw recursive optional' to [binds] (loginchroot.conf(5) lists the defaults)")
                }
            }
        }
        if let config {
            record("display managers' greeters keep the host's root") {
                for (service, account) in Self.greeters where !config.exemptUsers.contains(account) && pamService(service, reaches: 0) {
                    throw SetupError("the PAM service \(service) reaches the module, and its greeter runs as \(account), which exempt_users in \(global.config) does not list: the login screen would get a root",
                                     fix: "add \(account) to exempt_users (the default list has it)")
                }
            }
        }
        if SELinux.isEnabled() {
            record("SELinux policy module loginchroot loaded") {
                guard SELinux.policyKnows("system_u:object_r:loginchroot_runtime_t:s0") else {
                    throw SetupError("SELinux is on and the policy has no loginchroot types: under enforcing mode logins into roots are refused",
                                     fix: "semodule -i /usr/share/selinux/packages/loginchroot.pp, then restorecon /usr/sbin/loginchroot /var/lib/loginchroot /run/loginchroot")
                }
            }
        }
        record("kernel 5.14 or newer (cgroup.kill, mount_setattr, openat2)") {
            guard let (major, minor) = Kernel.version(), (major, minor) >= (5, 14) else {
                throw SetupError("the kernel is older than 5.14", fix: "run loginchroot on Linux 5.14 or newer")
            }
        }
        record("cgroup2 mounted") {
            guard Cgroups.find() != nil else {
                throw SetupError("no cgroup2 mount", fix: "mount cgroup2 (without it every login fails: a session's processes need a cgroup of their own)")
            }
        }
        // Last: it mounts the current generation in this process's own namespace.
        if SELinux.isEnabled(), let config {
            let backend = Backends.make(config)
            if let generation = try? backend.currentGeneration() {
                record("SELinux labels of generation \(generation)") {
                    let state = try StateStore(directory: config.stateDir)
                    try ImageLabels.checkGeneration(generation, of: backend, state: state, log: printError)
                }
            }
        }
        let failed = findings.filter { !$0.ok }
        if output.json {
            printJSON(findings)
        } else {
            for finding in findings {
                print(finding.ok ? "ok    \(finding.what)" : "FAIL  \(finding.what)\n      fix: \(finding.fix)")
            }
        }
        if !failed.isEmpty { throw ExitCode(1) }
    }

    static let pamDirectories = ["/etc/pam.d", "/usr/lib/pam.d"]  // an /etc file replaces the other whole
    static let moduleDirectory = "/lib/x86_64-linux-gnu/security"
    /// The PAM service each Debian 12 display manager runs its greeter
    /// through, and the greeter's account.
    static let greeters = [("gdm-launch-environment", "Debian-gdm"), ("lightdm-greeter", "lightdm"),
                           ("greetd-greeter", "_greetd"), ("sddm-greeter", "sddm")]

    /// Some service uses the module, each such line names a module file
    /// that exists, and none puts it before pam_systemd.
    func checkPamServices() throws {
        var users: [String] = []
        for name in (try? Files.listDirectory("/etc/pam.d")) ?? [] {
            let file = joinPath("/etc/pam.d", name)
            guard let text = try? Files.read(file) else { continue }
            let lines = PamStack.parse(text).lines
            guard let line = lines.first(where: \.isLoginChroot) else { continue }
            users.append(name)
            let module = line.module.hasPrefix("/") ? line.module : joinPath(Self.moduleDirectory, line.module)
            guard Files.exists(module) else {
                throw SetupError("\(file):\(line.number) names \(module), which does not exist",
                                 fix: "install the package (apt install ./loginchroot_VERSION_amd64.deb), or 'make install'")
            }
            if let wrong = PamStack.misplacement(in: lines) {
                throw SetupError("\(file): \(wrong): logind would move the login out of its cgroup",
                                 fix: "put it after pam_systemd.so ('pam-auth-update --enable loginchroot' does)")
            }
        }
        guard !users.isEmpty else {
            throw SetupError("no PAM service in /etc/pam.d uses pam_loginchroot.so: logins get no root",
                             fix: "pam-auth-update --enable loginchroot (once 'loginchroot init' has made the store)")
        }
    }

    /// Whether PAM service `name` runs the module, itself or through what it includes.
    func pamService(_ name: String, reaches depth: Int) -> Bool {
        guard depth < 8, let text = Self.pamDirectories.lazy.compactMap({ try? Files.read(joinPath($0, name)) }).first
        else { return false }
        let parsed = PamStack.parse(text)
        return parsed.lines.contains(where: \.isLoginChroot) || parsed.includes.contains { pamService($0, reaches: depth + 1) }
    }
}
