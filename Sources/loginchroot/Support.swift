// What every verb shares: the --config/--json options, loading the pieces,
// and JSON output (Codable, from the FoundationEssentials ArgumentParser links).
import ArgumentParser
import FoundationEssentials
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
        SessionManager(config: config, log: { printError($0) })
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

/// Prints `value` as one line of JSON: keys in snake_case, sorted.
func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    do {
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    } catch {
        printError("loginchroot: cannot write JSON: \(error)")
    }
}

/// A root as `sessions --json` and `status --json` show it.
struct RootJSON: Encodable {
    struct Session: Encodable {
        let id: String
        let pid: Int32
        let cgroup: String
    }
    let key, user: String
    let uid: UInt32
    let backend, generation, phase, note: String
    let sessions: [Session]

    init(_ record: RootRecord) {
        key = record.key.value; user = record.user.value; uid = record.uid
        backend = record.backend.rawValue; generation = record.generation.name
        phase = record.phase.rawValue; note = record.note
        sessions = record.members.map { Session(id: $0.id, pid: $0.pid, cgroup: $0.cgroup) }
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
