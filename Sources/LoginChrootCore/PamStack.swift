// What the machine's PAM configuration does with the module, for `check`:
// which services use it, in what order next to pam_systemd. Pure: the
// caller reads the files.

/// One `session` line of a PAM service file that names a module.
public struct PamSessionLine: Equatable, Sendable {
    public var number: Int
    public var control: String
    /// As written: a bare name (found in the security directory) or a path.
    public var module: String

    public init(number: Int, control: String, module: String) {
        self.number = number; self.control = control; self.module = module
    }

    public var isLoginChroot: Bool { module.hasSuffix("pam_loginchroot.so") }
}

public enum PamStack {
    /// The session lines of a service file, and the files it includes
    /// (`@include NAME`, `session include|substack NAME`), in order.
    public static func parse(_ text: String) -> (lines: [PamSessionLine], includes: [String]) {
        var lines: [PamSessionLine] = [], includes: [String] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.prefix { $0 != "#" }
            var words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = words.first else { continue }
            if first == "@include", words.count > 1 { includes.append(words[1]); continue }
            guard first == "session" || first == "-session", words.count >= 3 else { continue }
            words.removeFirst()
            var control = words.removeFirst()
            if control.hasPrefix("[") {  // [value=action ...] may hold blanks
                while !control.hasSuffix("]"), !words.isEmpty { control += " " + words.removeFirst() }
            }
            guard let module = words.first else { continue }
            if control == "include" || control == "substack" { includes.append(module); continue }
            lines.append(PamSessionLine(number: index + 1, control: control, module: module))
        }
        return (lines, includes)
    }

    /// Why the module's place in this file is wrong, or nil: it must come
    /// after pam_systemd, which moves the login into its session's scope.
    public static func misplacement(in lines: [PamSessionLine]) -> String? {
        guard let module = lines.first(where: \.isLoginChroot),
              let systemd = lines.first(where: { $0.module.hasSuffix("pam_systemd.so") }),
              module.number < systemd.number else { return nil }
        return "pam_loginchroot.so (line \(module.number)) comes before pam_systemd.so (line \(systemd.number))"
    }
}
