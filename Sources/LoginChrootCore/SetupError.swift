// Failures that are not syscalls, phrased for the admin.

/// A failure that is not a syscall: a file with the wrong owner, a store
/// that is not initialised. `fix` tells the admin what to do.
public struct SetupError: Error, Equatable, CustomStringConvertible {
    public var problem: String
    public var fix: String
    public init(_ problem: String, fix: String) { self.problem = problem; self.fix = fix }
    public var description: String { "\(problem) (fix: \(fix))" }
}
