import ArgumentParser
import LoginChroot
import LoginChrootCore
import LoginChrootPlatform

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the store and master from a directory, a tarball or debootstrap, and publish the first generation.")

    @OptionGroup var global: GlobalOptions
    @Option(help: "Copy master from this directory tree.") var fromDir: String?
    @Option(help: "Extract master from this tarball.") var fromTar: String?
    @Option(help: "Build master with debootstrap for this suite (e.g. bookworm).") var debootstrap: String?
    @Option(help: "Mirror for --debootstrap.") var mirror = "http://deb.debian.org/debian"

    func validate() throws {
        let sources = [fromDir, fromTar, debootstrap].compactMap { $0 }
        guard sources.count == 1 else { throw ValidationError("give exactly one of --from-dir, --from-tar, --debootstrap") }
    }

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let extra = debootstrap == nil ? [] : [RequiredProgram("debootstrap", in: "debootstrap")]
        let generation = try reporting {
            try Images(config: config, log: printError).initialize(alsoRequiring: extra) { master in
                let command: [String]
                let step: String
                if let fromDir {
                    guard Files.isDirectory(fromDir) else { throw Failure("--from-dir \(fromDir) is not a directory") }
                    command = ["cp", "-a", "--reflink=auto", joinPath(fromDir, "."), master]
                    step = "copying \(fromDir) into master"
                } else if let fromTar {
                    command = ["tar", "-xpf", fromTar, "--numeric-owner", "-C", master]
                    step = "extracting \(fromTar) into master"
                } else {
                    command = ["debootstrap", "--variant=minbase", debootstrap!, master, mirror]
                    step = "debootstrap \(debootstrap!) into master"
                }
                let progress = Progress(step, measuring: master)
                let outcome = try Processes.runQuietly(command, waiting: progress.tick)
                progress.finish()
                guard outcome.status == 0 else {
                    throw Failure("\(command[0]) failed with exit status \(outcome.status):\n\(outcome.output)")
                }
            }
        }
        print("store ready at \(config.storePath) (\(config.backend.rawValue)); published \(generation)")
    }
}
