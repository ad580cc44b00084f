import ArgumentParser

@main
struct CreditsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credits",
        abstract: "The system of record for client credits, served over gRPC.",
        discussion: """
            Runs the credits gRPC service (h2c, prior knowledge) on a local SQLite file.
            Start with `credits serve`; every flag has a default.
            """,
        subcommands: [Serve.self, Migrate.self, Verify.self, Backup.self, Admin.self],
        defaultSubcommand: Serve.self
    )
}
