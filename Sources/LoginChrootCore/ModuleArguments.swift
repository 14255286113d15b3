// Arguments given to pam_loginchroot.so in a PAM stack. Parsed in one loop,
// as pam_keyinit does; unknown arguments are reported and ignored so that a
// typo in /etc/pam.d never locks anybody out.

public struct ModuleArguments: Equatable, Sendable {
    public var configPath = Config.defaultPath
    public var debug = false
    /// Arguments that were not understood, for the log.
    public var ignored: [String] = []

    public init() {}

    public static func parse(_ arguments: [String]) -> ModuleArguments {
        var result = ModuleArguments()
        for argument in arguments {
            if argument == "debug" {
                result.debug = true
            } else if argument.hasPrefix("config="), argument.count > 7, argument.dropFirst(7).hasPrefix("/"),
                      argument.utf8.count <= 1024 {
                result.configPath = String(argument.dropFirst(7))
            } else {
                result.ignored.append(String(argument.prefix(64)))
            }
        }
        return result
    }
}
