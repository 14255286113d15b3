// The programs `init` runs, each with the Debian package that has it:
// `init` checks them before it makes anything, and `check` reports them.
import LoginChrootCore
import LoginChrootPlatform

public struct RequiredProgram: Equatable, Sendable {
    public var name: String
    public var package: String
    public init(_ name: String, in package: String) { self.name = name; self.package = package }
}

public enum RequiredPrograms {
    /// What making the store takes (a filesystem for it or for master).
    public static func forStore(_ backend: SnapshotBackend) -> [RequiredProgram] {
        // Every publish labels master (ImageLabels).
        backend.requiredPrograms + (SELinux.isEnabled() ? [RequiredProgram("setfiles", in: "policycoreutils")] : [])
    }

    /// Throws, naming what to install, unless every program is there.
    public static func require(_ programs: [RequiredProgram]) throws {
        let missing = programs.filter { Processes.findProgram($0.name) == nil }
        guard !missing.isEmpty else { return }
        throw SetupError("\(missing.map(\.name).joined(separator: ", ")) not found",
                         fix: "apt install \(Set(missing.map(\.package)).sorted().joined(separator: " "))")
    }
}
