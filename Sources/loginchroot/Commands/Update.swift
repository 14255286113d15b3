import ArgumentParser
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
        let generation = try reporting {
            try Images(config: config, log: printError).update {
                // master run moves its own process into master, so it runs as a child.
                try Processes.run(["/proc/self/exe", "master", "run", "--config", global.config,
                                   "--lock-held-by-parent", "--", "/bin/sh", "-c", config.updateCommand])
            }
        }
        print("updated master and published \(generation)")
    }
}
