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
        let backend = Backends.make(config)
        try reporting {
            // Before anything is made: a missing tool leaves nothing behind.
            var programs = RequiredPrograms.forStore(config)
            if debootstrap != nil { programs.append(RequiredProgram("debootstrap", in: "debootstrap")) }
            try RequiredPrograms.require(programs)
            let state = try StateStore(directory: config.stateDir)
            let lock = try state.masterLock()
            defer { withExtendedLifetime(lock) {} }
            try StoreMount.createImage(config)
            try StoreMount.ensureMounted(config)
            try backend.createMaster()
            let master = try ImageLabels.mountPrivately(try backend.masterLayout(), state: state, log: printError)
            // A fresh ext4 has lost+found: that is still an empty master.
            if try !Files.listDirectory(master).allSatisfy({ $0 == "lost+found" }) {
                guard try backend.generations().isEmpty else {
                    throw Failure("the store is already initialised (use 'loginchroot update')")
                }
                printError("master holds what a failed init left; emptying it first")
                try Init.empty(master)
            }
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
                throw Failure("\(command[0]) failed with exit status \(outcome.status):\n\(outcome.output)"
                              + Init.emptyAfterFailure(master))
            }
            let generation = try ImageLabels.publish(backend, state: state, mountedMaster: master, log: printError)
            print("store ready at \(config.storePath) (\(config.backend.rawValue)); published \(generation)")
        }
    }

    /// Empties master after a failed copy, so the same `init` can run
    /// again once the cause is fixed. Says what happened, for the error.
    private static func emptyAfterFailure(_ master: String) -> String {
        do {
            try empty(master)
            return "\nmaster was emptied: run the same 'loginchroot init' again once the cause is fixed"
        } catch {
            return "\nemptying master failed (\(error)); the same 'loginchroot init' empties it first when run again"
        }
    }

    private static func empty(_ master: String) throws {
        let directory = try Descriptor.openDirectory(master)
        for name in try Files.listDirectory(master) where name != "lost+found" {
            try Files.removeTree(parent: directory, name: name)
        }
    }
}
