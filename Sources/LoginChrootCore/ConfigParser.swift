// Parses loginchroot.conf: `key = value` lines under `[section]` headers,
// `#` comments. Anything unknown or malformed is an error that names the
// file, the line and the fix: a typo must never silently weaken a login policy.

public struct ConfigError: Error, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var problem: String
    public var fix: String

    public init(file: String, line: Int, problem: String, fix: String) {
        self.file = file; self.line = line; self.problem = problem; self.fix = fix
    }

    public var description: String {
        line > 0 ? "\(file):\(line): \(problem) (fix: \(fix))" : "\(file): \(problem) (fix: \(fix))"
    }
}

public enum ConfigParser {
    static let maxLineBytes = 4096
    static let maxFileBytes = 1 << 20

    public static func parse(_ text: String, file: String) throws -> Config {
        guard text.utf8.count <= maxFileBytes else {
            throw ConfigError(file: file, line: 0, problem: "file is larger than 1 MiB", fix: "use the documented keys only")
        }
        var config = Config()
        var section = ""
        var seen = Set<String>()
        var customBinds: [BindEntry]? = nil

        // "\r\n" is one Character in Swift: split on both, so CRLF files parse.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, rawLine) in lines.enumerated() {
            let lineNumber = index + 1
            func fail(_ problem: String, _ fix: String) -> ConfigError {
                ConfigError(file: file, line: lineNumber, problem: problem, fix: fix)
            }
            guard rawLine.utf8.count <= maxLineBytes else { throw fail("line longer than 4096 bytes", "shorten it") }
            // A carriage return may only end a line (a CRLF file missing its last LF).
            let body = rawLine.unicodeScalars.last == "\r" ? rawLine.unicodeScalars.dropLast() : rawLine.unicodeScalars[...]
            guard !body.contains(where: { $0.value < 0x20 && $0 != "\t" }) else {
                throw fail("control character in line", "remove it")
            }
            // '#' starts a comment only at the start of a line, so values
            // (an update_command, say) may contain it.
            let line = rawLine.trimmed
            if line.isEmpty || line.hasPrefix("#") { continue }

            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else { throw fail("malformed section header '\(line)'", "write it as [name]") }
                let name = String(line.dropFirst().dropLast()).trimmed
                guard knownSections.contains(name) else {
                    throw fail("unknown section [\(name)]", "use one of [\(knownSections.sorted().joined(separator: "], ["))]")
                }
                section = name
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw fail("expected 'key = value', got '\(line)'", "add '=' between key and value")
            }
            let key = String(line[..<equals]).trimmed
            let value = String(line[line.index(after: equals)...]).trimmed
            guard !section.isEmpty else { throw fail("key '\(key)' outside any section", "put it under its [section] header") }
            let qualified = section + "." + key
            if qualified != "binds.bind" {
                guard seen.insert(qualified).inserted else { throw fail("'\(key)' set twice in [\(section)]", "keep one of them") }
            }
            do {
                if qualified == "binds.bind" {
                    customBinds = (customBinds ?? []) + [try parseBind(value)]
                } else {
                    try apply(section: section, key: key, value: value, to: &config)
                }
            } catch let problem as ValueProblem {
                throw fail(problem.problem, problem.fix)
            }
        }
        if let customBinds { config.binds = customBinds }
        if config.dataDevice.isEmpty != config.metadataDevice.isEmpty {
            throw ConfigError(file: file, line: 0, problem: "[dm-thin] names only one of data_device and metadata_device",
                              fix: "name both devices, or neither (loop files in the store)")
        }
        if config.overlayLower == .erofs && config.backend != .overlay {
            throw ConfigError(file: file, line: 0, problem: "[overlay] lower = erofs, but the backend is \(config.backend.rawValue)",
                              fix: "remove lower from [overlay]: erofs generations are the overlay backend's")
        }
        if config.overlayUpperDirectory != nil && seen.contains("overlay.tmpfs_size") {
            throw ConfigError(file: file, line: 0, problem: "[overlay] tmpfs_size is set but upper is a directory",
                              fix: "remove tmpfs_size, or set upper = tmpfs")
        }
        return config
    }

    struct ValueProblem: Error {
        var problem: String
        var fix: String
    }

    static let knownSections: Set<String> = ["store", "session", "overlay", "dm-thin", "binds", "master", "fleet"]

    static func apply(section: String, key: String, value: String, to config: inout Config) throws {
        switch (section, key) {
        case ("store", "backend"):
            guard let kind = BackendKind(rawValue: value) else {
                throw ValueProblem(problem: "unknown backend '\(value)'", fix: "use dm-thin, btrfs or overlay")
            }
            config.backend = kind
        case ("store", "path"): config.storePath = try absolutePath(value, key: key)
        case ("store", "image"): config.storeImage = value.isEmpty ? "" : try absolutePath(value, key: key)
        case ("store", "image_size"):
            config.storeImageSize = try size(value, key: key)
            guard config.storeImageSize <= 1 << 50 else {
                throw ValueProblem(problem: "image_size '\(value)' is larger than 1 PiB", fix: "give a smaller size")
            }
        case ("store", "root_size"):
            config.rootSize = try size(value, key: key)
            guard config.rootSize >= 1 << 20 else {
                throw ValueProblem(problem: "root_size '\(value)' is less than 1M", fix: "give a size of 1M or more")
            }
        case ("store", "keep_generations"): config.keepGenerations = try integer(value, key: key, in: 1...1000)
        case ("session", "mode"):
            guard let mode = SessionMode(rawValue: value) else {
                throw ValueProblem(problem: "unknown mode '\(value)'", fix: "use per-user or per-session")
            }
            config.mode = mode
        case ("session", "on_error"):
            guard let policy = ErrorPolicy(rawValue: value) else {
                throw ValueProblem(problem: "unknown on_error '\(value)'", fix: "use deny or allow")
            }
            config.onError = policy
        case ("session", "exempt_users"): config.exemptUsers = try nameList(value, key: key)
        case ("session", "exempt_groups"): config.exemptGroups = try nameList(value, key: key)
        case ("session", "state_dir"): config.stateDir = try absolutePath(value, key: key)
        case ("session", "add_user_entries"): config.addUserEntries = try boolean(value, key: key)
        case ("session", "copy_files"): config.copyFiles = try value.words.map { try absolutePath($0, key: key) }
        case ("session", "kill_timeout"): config.killTimeoutSeconds = try integer(value, key: key, in: 1...300)
        case ("session", "lock_timeout"): config.lockTimeoutSeconds = try integer(value, key: key, in: 1...600)
        case ("session", "setuid"): config.allowSetuid = try boolean(value, key: key)
        case ("session", "runtime_dir_size"):
            if value.hasSuffix("%"), let share = Int(value.dropLast()), (1...100).contains(share) {
                config.runtimeDirectorySize = value
            } else {
                config.runtimeDirectorySize = String(try size(value, key: key))
            }
        case ("overlay", "upper"):
            config.overlayUpperDirectory = value == "tmpfs" ? nil : try absolutePath(value, key: key)
        case ("overlay", "tmpfs_size"):
            config.overlayTmpfsSize = try size(value, key: key)
        case ("overlay", "lower"):
            guard let lower = OverlayLower(rawValue: value) else {
                throw ValueProblem(problem: "unknown lower '\(value)'", fix: "use directory or erofs")
            }
            config.overlayLower = lower
        case ("dm-thin", "pool_name"):
            guard ThinNames.isValidPoolName(value) else {
                throw ValueProblem(problem: "pool_name '\(value)' is not 1-\(ThinNames.maxPoolNameLength) of [A-Za-z0-9_-]",
                                   fix: "use a short name of letters, digits, '_' and '-'")
            }
            config.poolName = value
        case ("dm-thin", "data_device"): config.dataDevice = value.isEmpty ? "" : try absolutePath(value, key: key)
        case ("dm-thin", "metadata_device"): config.metadataDevice = value.isEmpty ? "" : try absolutePath(value, key: key)
        case ("dm-thin", "data_size"): config.dataSize = try size(value, key: key)
        case ("dm-thin", "metadata_size"):
            config.metadataSize = try size(value, key: key)
            guard (2 << 20...16 << 30).contains(config.metadataSize) else {
                throw ValueProblem(problem: "metadata_size '\(value)' is outside 2M...16G", fix: "give a size in that range")
            }
        case ("dm-thin", "volume_size"): config.volumeSize = try size(value, key: key)
        case ("dm-thin", "block_size"):
            config.thinBlockSize = try size(value, key: key)
            guard config.thinBlockSize % (64 << 10) == 0, config.thinBlockSize <= 1 << 30 else {
                throw ValueProblem(problem: "block_size '\(value)' is not a multiple of 64K up to 1G", fix: "use 64K (the default) or a multiple")
            }
        case ("dm-thin", "filesystem"):
            guard let filesystem = ThinFilesystem(rawValue: value) else {
                throw ValueProblem(problem: "unknown filesystem '\(value)'", fix: "use ext4 or xfs")
            }
            config.filesystem = filesystem
        case ("store", "min_free"):
            let digits = value.hasSuffix("%") ? String(value.dropLast()) : value
            config.minFreePercent = try integer(digits, key: key, in: 0...90)
        case ("master", "update_command"):
            guard !value.isEmpty else { throw ValueProblem(problem: "update_command is empty", fix: "name the command that updates master") }
            config.updateCommand = value
        case ("fleet", "ref"):
            guard !value.isEmpty, !value.hasPrefix("/"), !value.hasSuffix("/"), !value.contains(".."),
                  value.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)
                                                                   || "-_./".unicodeScalars.contains($0)) }) else {
                throw ValueProblem(problem: "ref '\(value)' is not an OSTree branch name",
                                   fix: "use letters, digits, '-', '_', '.' and '/' between names, like loginchroot/golden")
            }
            config.fleetRef = value
        case ("fleet", "signing_key"):
            guard value.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit }) else {
                throw ValueProblem(problem: "signing_key '\(value)' is not a key id or fingerprint",
                                   fix: "give the fingerprint 'gpg --homedir GPG_HOME --list-secret-keys' prints")
            }
            config.fleetSigningKey = value
        case ("fleet", "gpg_home"): config.fleetGPGHome = try absolutePath(value, key: key)
        case ("fleet", "keep_commits"):
            // 2 at least: the summary clients hold names the previous commit until the new one is signed.
            config.fleetKeepCommits = try integer(value, key: key, in: 2...1000)
        case ("fleet", "url"):
            guard ["https://", "http://", "file:///"].contains(where: { value.hasPrefix($0) }),
                  !value.unicodeScalars.contains(where: { $0 == " " || $0 == "\t" || $0 == "#" }) else {
                throw ValueProblem(problem: "url '\(value)' is not an https://, http:// or file:/// address",
                                   fix: "give the address of the build host's repository, like https://build.example.org/loginchroot")
            }
            config.fleetURL = value
        case ("fleet", "keyring"): config.fleetKeyring = try absolutePath(value, key: key)
        case ("fleet", "pull_attempts"): config.fleetPullAttempts = try integer(value, key: key, in: 1...100)
        default:
            throw ValueProblem(problem: "unknown key '\(key)' in [\(section)]", fix: "see loginchroot.conf(5) for the keys of [\(section)]")
        }
    }

    /// `bind = SOURCE[:TARGET] [ro|rw] [recursive] [private|slave|shared] [optional]`
    public static func parseBind(_ value: String) throws -> BindEntry {
        let fields = value.words
        guard let pathField = fields.first else {
            throw ValueProblem(problem: "bind needs a path",
                               fix: "write bind = /path[:/target] [ro|rw] [recursive] [private|slave|shared] [optional]")
        }
        let parts = pathField.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, !parts.contains(where: \.isEmpty) else {
            throw ValueProblem(problem: "bind path '\(pathField)' is not SOURCE or SOURCE:TARGET",
                               fix: "write one absolute source path, optionally ':' and one absolute target path")
        }
        var entry = BindEntry(source: try absolutePath(parts[0], key: "bind"),
                              target: try parts.count > 1 ? absolutePath(parts[1], key: "bind") : nil)
        for option in fields.dropFirst() {
            switch option {
            case "ro": entry.readOnly = true
            case "rw": entry.readOnly = false
            case "recursive": entry.recursive = true
            case "optional": entry.optional = true
            default:
                guard let propagation = Propagation(rawValue: option) else {
                    throw ValueProblem(problem: "unknown bind option '\(option)'",
                                       fix: "use ro, rw, recursive, optional, private, slave or shared")
                }
                entry.propagation = propagation
            }
        }
        guard entry.target != "/" else {
            throw ValueProblem(problem: "bind target '/' would hide the session root", fix: "bind below /")
        }
        return entry
    }

    static func absolutePath(_ value: String, key: String) throws -> String {
        guard value.hasPrefix("/") else {
            throw ValueProblem(problem: "\(key) must be an absolute path, got '\(value)'", fix: "start it with /")
        }
        guard !value.unicodeScalars.contains(where: { $0 == " " || $0 == "\t" || $0 == "#" }) else {
            throw ValueProblem(problem: "\(key) path '\(value)' contains a blank or '#'",
                               fix: "use a path without blanks or '#' (comments go on their own line)")
        }
        let components = value.split(separator: "/")
        guard !components.contains(where: { $0 == ".." || $0 == "." }) else {
            throw ValueProblem(problem: "\(key) path '\(value)' contains . or ..", fix: "write the path without . or ..")
        }
        return components.isEmpty ? "/" : "/" + components.joined(separator: "/")
    }

    static func size(_ value: String, key: String) throws -> UInt64 {
        guard let bytes = parseSize(value), bytes > 0 else {
            throw ValueProblem(problem: "\(key) '\(value)' is not a size", fix: "write a size such as 512M or 8G")
        }
        return bytes
    }

    static func integer(_ value: String, key: String, in range: ClosedRange<Int>) throws -> Int {
        guard let number = Int(value), range.contains(number) else {
            throw ValueProblem(problem: "\(key) '\(value)' is not a number in \(range.lowerBound)...\(range.upperBound)",
                               fix: "write a whole number in that range")
        }
        return number
    }

    static func boolean(_ value: String, key: String) throws -> Bool {
        switch value {
        case "yes", "true", "1": return true
        case "no", "false", "0": return false
        default: throw ValueProblem(problem: "\(key) '\(value)' is not yes or no", fix: "write yes or no")
        }
    }

    static func nameList(_ value: String, key: String) throws -> [String] {
        let names = value.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }).map(String.init)
        for name in names where UserName(validating: Array(name.utf8)) == nil {
            throw ValueProblem(problem: "\(key) entry '\(name)' is not a valid user or group name",
                               fix: "use names of letters, digits, '_', '-', '.' and '@'")
        }
        return names
    }
}
