// Shared helpers for the unit tests: a reproducible PRNG and assertion helpers.
import Foundation
import XCTest
@testable import LoginChrootCore
import LoginChrootTestSupport

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seeded, reproducible on every platform.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in 0..<bound (bound > 0); the modulo bias is irrelevant here.
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// Parses `text` expecting a ConfigError on `line`; returns it for further checks.
@discardableResult
func assertConfigError(_ text: String, line: Int, problemContains needle: String,
                       file: StaticString = #filePath, sourceLine: UInt = #line) -> ConfigError? {
    do {
        let config = try ConfigParser.parse(text, file: "/etc/test.conf")
        XCTFail("expected a ConfigError, parsed \(config)", file: file, line: sourceLine)
        return nil
    } catch let error as ConfigError {
        XCTAssertEqual(error.file, "/etc/test.conf", file: file, line: sourceLine)
        XCTAssertEqual(error.line, line, "wrong line for: \(error)", file: file, line: sourceLine)
        XCTAssertFalse(error.fix.trimmed.isEmpty, "empty fix for: \(error)", file: file, line: sourceLine)
        XCTAssertTrue(error.problem.containsLiteral(needle), "problem '\(error.problem)' lacks '\(needle)'",
                      file: file, line: sourceLine)
        XCTAssertTrue(error.description.hasPrefix("/etc/test.conf:\(line): ") || line == 0,
                      "description '\(error.description)' does not name file:line", file: file, line: sourceLine)
        return error
    } catch {
        XCTFail("expected a ConfigError, got \(type(of: error)): \(error)", file: file, line: sourceLine)
        return nil
    }
}

func parseConfig(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> Config? {
    do { return try ConfigParser.parse(text, file: "/etc/test.conf") } catch {
        XCTFail("unexpected error: \(error)", file: file, line: line)
        return nil
    }
}

/// Applies `rounds` seeded random mutations to `text` (1 to 6 edits each:
/// deletions, insertions of `interesting` bytes, overwrites, truncation, a
/// duplicated slice, a repeated byte that sometimes crosses the 4096-byte
/// line limit) and counts the inputs for which `check` holds.
func countHolding(mutationsOf text: String, seed: UInt64, interesting: [UInt8], rounds: Int,
                  _ check: (String) -> Bool) -> Int {
    var random = SplitMix64(seed: seed)
    let original = Array(text.utf8)
    var held = 0
    for _ in 0..<rounds {
        var bytes = original
        for _ in 0..<(1 + random.below(6)) {
            let position = bytes.isEmpty ? 0 : random.below(bytes.count)
            switch random.below(6) {
            case 0: if !bytes.isEmpty { bytes.remove(at: position) }
            case 1: bytes.insert(interesting[random.below(interesting.count)], at: position)
            case 2: if !bytes.isEmpty { bytes[position] = UInt8(truncatingIfNeeded: random.next()) }
            case 3: bytes = Array(bytes.prefix(position))
            case 4:
                // Duplicate a slice (often a whole line).
                let end = min(bytes.count, position + random.below(60))
                bytes.insert(contentsOf: bytes[position..<end], at: end)
            default:
                let count = random.below(10) == 0 ? 4090 + random.below(12) : random.below(8)
                if !bytes.isEmpty { bytes.insert(contentsOf: Array(repeating: bytes[position], count: count), at: position) }
            }
        }
        if check(String(decoding: bytes, as: UTF8.self)) { held += 1 }
    }
    return held
}

/// One row of RELIABILITY.md (scripts/reliability-report.py), when the test
/// run was given LC_RELIABILITY_LOG (make unit-test gives it).
func recordReliability(_ testCase: String, tries: Int, held: Int) {
    guard let path = ProcessInfo.processInfo.environment["LC_RELIABILITY_LOG"] else { return }
    let row: [String: Any] = ["case": testCase, "backend": "-", "tries": tries, "held": held, "lost": [String](),
                              "measured": "unit test, seeded", "tier": "unit"]
    guard let json = try? JSONSerialization.data(withJSONObject: row),
          FileManager.default.fileExists(atPath: path) || FileManager.default.createFile(atPath: path, contents: nil),
          let handle = FileHandle(forWritingAtPath: path) else { return }
    handle.seekToEndOfFile()
    handle.write(json + Data("\n".utf8))
    handle.closeFile()
}
