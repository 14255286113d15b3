import ArgumentParser
import LoginChroot
import LoginChrootPlatform

struct Update: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run [master] update_command inside master, then publish; or with --pull, publish the fleet's newest commit.",
        discussion: "Nothing is published when the update command or the pull fails.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Instead of running update_command: pull the newest signed commit of the fleet's branch ([fleet] url) and publish it.")
    var pull = false

    func run() throws {
        try requireRoot()
        let config = try global.load()
        if pull {
            let outcome = try reporting {
                try Images(config: config, log: printError).update(pulling: try FleetPull(config: config, configPath: global.config))
            }
            switch outcome {
            case .upToDate(let commit, let generation): print("up to date: \(generation) is commit \(commit) of \(config.fleetRef)")
            case .published(let commit, let generation): print("pulled commit \(commit) of \(config.fleetRef) and published \(generation)")
            }
            return
        }
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
