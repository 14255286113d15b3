// What every verb shares: the --config/--json options, loading the pieces,
// and a small JSON writer (the CLI needs no Foundation).
import ArgumentParser
import Glibc
import LoginChroot
import LoginChrootCore
import LoginChrootPlatform

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Config file.")
    var config: String = Config.defaultPath

    func load() throws -> Config {
        do { return try ConfigLoader.load(config) } catch { throw Failure("\(error)") }
    }

    func manager(_ config: Config) -> SessionManager {
        let log: (String) -> Void = { message in printError(message) }
        return SessionManager(config: config, backend: Backends.make(config), host: LinuxSessionHost(log: log), log: log)
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false
}

/// An error the user sees as one line, with exit status 1.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func printError(_ message: String) {
    var line = "loginchroot: " + message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

func requireRoot() throws {
    guard geteuid() == 0 else { throw Failure("this command needs root") }
}

/// Runs `body`, turning platform and setup errors into one readable line.
func reporting<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as Failure { throw error } catch {
        throw Failure("\(error)")
    }
}

enum JSON {
    case string(String)
    case number(UInt64)
    case bool(Bool)
    case array([JSON])
    case object([(String, JSON)])

    var rendered: String {
        switch self {
        case .string(let text): return JSON.quote(text)
        case .number(let value): return String(value)
        case .bool(let value): return value ? "true" : "false"
        case .array(let items): return "[" + items.map(\.rendered).joined(separator: ",") + "]"
        case .object(let fields): return "{" + fields.map { JSON.quote($0.0) + ":" + $0.1.rendered }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

extension RootRecord {
    var json: JSON {
        .object([
            ("key", .string(key.value)), ("user", .string(user.value)), ("uid", .number(UInt64(uid))),
            ("backend", .string(backend.rawValue)), ("generation", .string(generation.name)),
            ("phase", .string(phase.rawValue)), ("note", .string(note)),
            ("sessions", .array(members.map { .object([("id", .string($0.id)), ("pid", .number(UInt64($0.pid))),
                                                      ("cgroup", .string($0.cgroup))]) })),
        ])
    }
}

func humanBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) \(units[unit])"
}

/// A long step's progress on stderr: the step, what has been written to
/// the filesystem at `measuring` so far, and the time taken. On a terminal
/// one line is rewritten each second; in a log, a line every 30 s.
final class Progress {
    private let step: String
    private let measuring: String
    private let startFree: UInt64
    private let started = time(nil)
    private let onTerminal = isatty(2) == 1
    private var ticks = 0

    init(_ step: String, measuring path: String) {
        self.step = step
        measuring = path
        startFree = (try? Files.space(at: path).freeBytes) ?? 0
    }

    func tick() {
        ticks += 1
        guard onTerminal || ticks % 30 == 0 else { return }
        show(ending: onTerminal ? "" : "\n")
    }

    func finish() { if onTerminal { show(ending: "\n") } }

    private func show(ending: String) {
        let free = (try? Files.space(at: measuring).freeBytes) ?? startFree
        let seconds = Int(time(nil) - started)
        let timeTaken = "\(seconds / 60):\(seconds % 60 < 10 ? "0" : "")\(seconds % 60)"
        var line = "\(onTerminal ? "\r" : "")loginchroot: \(step): \(humanBytes(startFree - min(free, startFree))) written, \(timeTaken)\(ending)"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
