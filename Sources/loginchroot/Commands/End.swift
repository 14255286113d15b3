import ArgumentParser
import LoginChroot
import LoginChrootCore

struct End: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "End a root as a logout would: kill its processes and destroy its snapshot.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A user name (their per-user root) or a root id from 'loginchroot sessions'.")
    var root: String

    func validate() throws {
        guard RootKey(root) != nil else { throw ValidationError("'\(root)' is not a user name or root id") }
    }

    func run() throws {
        try requireRoot()
        let config = try global.load()
        let ended = try reporting { try global.manager(config).end(RootKey(root)!) }
        guard ended else { throw Failure("no open root named \(root)") }
        print("ended root \(root)")
    }
}
