// The loginchroot admin helper: a thin entry point; one file per verb in Commands/.
import ArgumentParser

@main
struct LoginChrootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loginchroot",
        abstract: "Manage the golden image and the per-login copy-on-write roots of pam_loginchroot.",
        discussion: """
            master is the mutable golden root; publish snapshots it as an immutable \
            generation; every login gets a writable snapshot of the current generation, \
            destroyed at logout. See loginchroot(8) and loginchroot.conf(5).
            """,
        subcommands: [
            Init.self, Start.self, Master.self, Publish.self, Update.self, Status.self,
            Sessions.self, End.self, GC.self, Check.self, Stop.self,
        ])

    @OptionGroup var global: GlobalOptions
}
