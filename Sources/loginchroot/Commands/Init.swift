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
            let state = StateStore(directory: config.stateDir)
            let lock = try state.masterLock()
            defer { withExtendedLifetime(lock) {} }
            try StoreMount.createImage(config)
            try StoreMount.ensureMounted(config)
            try backend.createMaster()
            try state.prepare(timeoutSeconds: config.lockTimeoutSeconds)
            let master = try LinuxSessionHost(log: printError).mountPrivately(try backend.masterLayout(), staging: state.stagingDir)
            // A fresh ext4 has lost+found: that is still an empty master.
            guard try Files.listDirectory(master).allSatisfy({ $0 == "lost+found" }) else {
                throw Failure("master \(master) is not empty; the store is already initialised (use 'loginchroot update')")
            }
            let command: [String]
            if let fromDir {
                guard Files.isDirectory(fromDir) else { throw Failure("--from-dir \(fromDir) is not a directory") }
                command = ["cp", "-a", "--reflink=auto", joinPath(fromDir, ".") , master]
            } else if let fromTar {
                command = ["tar", "-xpf", fromTar, "--numeric-owner", "-C", master]
            } else {
                command = ["debootstrap", "--variant=minbase", debootstrap!, master, mirror]
            }
            let status = try Processes.run(command)
            guard status == 0 else { throw Failure("\(command[0]) failed with exit status \(status)") }
            let generation = try backend.publish()
            print("store ready at \(config.storePath) (\(config.backend.rawValue)); published \(generation)")
        }
    }
}
