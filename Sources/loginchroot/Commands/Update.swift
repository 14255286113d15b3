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
        // master run moves its own process into master, so it runs as a child.
        let status = try reporting {
            try Processes.run(["/proc/self/exe", "master", "run", "--config", global.config, "--",
                               "/bin/sh", "-c", config.updateCommand])
        }
        guard status == 0 else { throw Failure("update command failed with exit status \(status); nothing published") }
        let generation = try reporting {
            let backend = Backends.make(config)
            let lock = try MasterLock(config)
            defer { withExtendedLifetime(lock) {} }
            return try backend.publish()
        }
        print("updated master and published \(generation)")
    }
}
