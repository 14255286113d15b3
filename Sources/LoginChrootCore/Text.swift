// Small string helpers. The module links without Foundation, and
// String.contains(String) would pull in _StringProcessing (+1.4 MB).

extension StringProtocol {
    /// The string without leading and trailing spaces and tabs.
    public var trimmed: String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" || first == "\r" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" || last == "\r" { scalars.removeLast() }
        return String(scalars)
    }

    /// Splits on runs of spaces and tabs.
    public var words: [String] {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        return self.split(maxSplits: Int.max, omittingEmptySubsequences: true, whereSeparator: isBlank).map { String($0) }
    }
}

extension String {
    /// Replaces every `token` with `value` (Foundation-free).
    public func replacing(token: String, with value: String) -> String {
        guard !token.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(ofLiteral: token) {
            result += rest[..<range.lowerBound]
            result += value
            rest = rest[range.upperBound...]
        }
        return result + rest
    }

    public func containsLiteral(_ needle: String) -> Bool {
        Substring(self).firstRange(ofLiteral: needle) != nil
    }
}

extension Substring {
    func firstRange(ofLiteral needle: String) -> Range<Index>? {
        let n = Array(needle.utf8)
        guard let first = n.first else { return nil }
        var index = startIndex
        while index < endIndex {
            if utf8[index] == first, self[index...].utf8.starts(with: n) {
                let end = utf8.index(index, offsetBy: n.count)
                return index..<end
            }
            index = utf8.index(after: index)
        }
        return nil
    }
}

/// Joins an absolute `base` and a relative or absolute `path` with one slash.
public func joinPath(_ base: String, _ path: String) -> String {
    let tail = path.drop(while: { $0 == "/" })
    if tail.isEmpty { return base }
    return base.hasSuffix("/") ? base + tail : base + "/" + tail
}

/// The directory part of `path` ("" for a bare name, "/" for "/x").
public func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// Parses "4G", "512M", "100K" or a plain byte count.
public func parseSize(_ text: String) -> UInt64? {
    var digits = text.trimmed
    var multiplier: UInt64 = 1
    if let last = digits.last, !last.isNumber {
        switch last {
        case "K", "k": multiplier = 1 << 10
        case "M", "m": multiplier = 1 << 20
        case "G", "g": multiplier = 1 << 30
        case "T", "t": multiplier = 1 << 40
        default: return nil
        }
        digits.removeLast()
    }
    guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = UInt64(digits) else { return nil }
    let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
    return overflow ? nil : product
}
