import ArgumentParser
import Glibc
import LoginChroot
import LoginChrootPlatform

struct Update: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run [master] update_command inside master, then publish.",
        discussion: "Nothing is published when the update command fails.")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let backend = Backends.make(config)
        let generation = try reporting {
            try backend.checkStore()
            // One lock across the update and the publish: no other writer of
            // master gets in between.
            let state = try StateStore(directory: config.stateDir)
            let lock = try state.masterLock()
            defer { withExtendedLifetime(lock) {} }
            // master run moves its own process into master, so it runs as a child.
            let status = try Processes.run(["/proc/self/exe", "master", "run", "--config", global.config,
                                            "--lock-held-by-parent", "--", "/bin/sh", "-c", config.updateCommand])
            guard status == 0 else { throw Failure("update command failed with exit status \(status); nothing published") }
            return try ImageLabels.publish(backend, state: state, log: printError)
        }
        print("updated master and published \(generation)")
    }
}
