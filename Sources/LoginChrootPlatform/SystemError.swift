// The one error type of the platform layer: which call failed, on what path,
// with which errno. Every syscall in the project goes through `sys`.
import CLinux
import LoginChrootCore
import Glibc

public struct SystemError: Error, Equatable, CustomStringConvertible {
    public var call: String
    public var path: String
    public var errno: Int32
    /// What a library said besides errno (libdevmapper's message).
    public var detail: String

    public init(call: String, path: String = "", errno: Int32, detail: String = "") {
        self.call = call; self.path = path; self.errno = errno; self.detail = detail
    }

    public var description: String {
        let what = path.isEmpty ? call : "\(call)(\(path))"
        return "\(what): \(String(cString: strerror(errno)))" + (detail.isEmpty ? "" : " (\(detail))")
    }
}

/// Runs a syscall that returns -1 and sets errno on failure, retrying EINTR.
@discardableResult
public func sys<T: BinaryInteger>(_ call: String, _ path: String = "", _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        throw SystemError(call: call, path: path, errno: code)
    }
}

/// Like `sys`, where errno `expected` is an outcome, not a failure: it
/// gives nil (EEXIST for a call that creates something, ENOENT for one
/// that looks or removes, EWOULDBLOCK for one that must not wait).
@discardableResult
public func sys<T: BinaryInteger>(_ call: String, _ path: String = "", unless expected: Int32,
                                  _ body: () -> T) throws -> T? {
    do { return try sys(call, path, body) } catch let error as SystemError where error.errno == expected { return nil }
}

/// The NUL-terminated string a C call wrote into `buffer`.
func string(fromCBuffer buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
