import ArgumentParser
import LoginChroot
import LoginChrootCore

struct End: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "End a root: kill every process in it and destroy its snapshot.",
        discussion: """
            Every process of the root dies, including the sshd, login or su process that opened \
            each of its sessions (their connections end). Then the snapshot is destroyed as at logout.
            """)

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
