// Shared helpers for the unit tests: a reproducible PRNG and assertion helpers.
import XCTest
@testable import LoginChrootCore

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

func user(_ name: String) -> UserName { UserName(name)! }

/// One row of RELIABILITY.md (scripts/reliability-report.py), when the test
/// run was given LC_RELIABILITY_LOG (make unit-test gives it).
func recordReliability(_ testCase: String, tries: Int, held: Int) {
    guard let path = ProcessInfo.processInfo.environment["LC_RELIABILITY_LOG"],
          let handle = FileHandle(forWritingAtPath: path) ?? {
              _ = FileManager.default.createFile(atPath: path, contents: nil)
              return FileHandle(forWritingAtPath: path)
          }() else { return }
    let escaped = testCase.replacingOccurrences(of: "\"", with: "'")
    let line = "{\"case\": \"\(escaped)\", \"backend\": \"-\", \"tries\": \(tries), \"held\": \(held), "
        + "\"lost\": [], \"measured\": \"unit test, seeded\", \"tier\": \"unit\"}\n"
    handle.seekToEndOfFile()
    handle.write(line.data(using: .utf8)!)
    handle.closeFile()
}
