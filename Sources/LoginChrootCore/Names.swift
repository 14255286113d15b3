// Names that become paths, cgroup names and (later) device names. They are
// validated from raw bytes, before anything else sees them.

/// A user name that is safe to use as a single path component.
/// Accepted: 1...64 bytes of [A-Za-z0-9_.@-], not starting with '.', '-' or
/// '@' ('@' for sssd's user@domain names).
public struct UserName: Hashable, Sendable, CustomStringConvertible {
    public let value: String
    /// Longer than useradd allows, for sssd's user@domain names; short
    /// enough for device-mapper and cgroup names built from it.
    public static let maxLength = 64

    public init?(validating bytes: [UInt8]) {
        guard (1...UserName.maxLength).contains(bytes.count),
              let first = bytes.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-"), first != UInt8(ascii: "@"),
              bytes.allSatisfy(UserName.isAllowed)
        else { return nil }
        value = String(decoding: bytes, as: UTF8.self)
    }

    public init?(_ string: String) { self.init(validating: Array(string.utf8)) }

    public var description: String { value }

    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "@"):
            return true
        default:
            return false
        }
    }
}

/// The name of one session root: the user name for a per-user root, or
/// `user+serial` for a per-session root ('+' never occurs in a user name).
public struct RootKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let value: String

    public static func perUser(_ user: UserName) -> RootKey { RootKey(trusted: user.value) }

    public static func perSession(_ user: UserName, serial: UInt64) -> RootKey {
        RootKey(trusted: user.value + "+" + String(serial))
    }

    private init(trusted: String) { value = trusted }

    /// Parses a key read back from disk (state files, snapshot names).
    public init?(_ text: String) {
        let parts = text.split(separator: "+", omittingEmptySubsequences: false)
        guard parts.count <= 2, UserName(String(parts[0])) != nil else { return nil }
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].count <= 20, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        }
        value = text
    }

    public var userName: UserName? { UserName(String(value.split(separator: "+")[0])) }
    public var description: String { value }
    public static func < (a: RootKey, b: RootKey) -> Bool { a.value < b.value }
}

/// A stable generation name: `gen-N`.
public struct Generation: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let number: UInt64
    public init(number: UInt64) { self.number = number }

    public init?(_ name: String) {
        guard name.hasPrefix("gen-"), let number = UInt64(name.dropFirst(4)), name == "gen-\(number)" else { return nil }
        self.number = number
    }

    public var name: String { "gen-\(number)" }
    public var description: String { name }
    public var next: Generation { Generation(number: number + 1) }
    public static func < (a: Generation, b: Generation) -> Bool { a.number < b.number }
}
