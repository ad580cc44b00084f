import ArgumentParser
import Ledger

@main
struct CreditsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credits",
        abstract: "The system of record for client credits, served over gRPC.",
        discussion: """
            Runs the credits gRPC service (h2c, prior knowledge) on a local SQLite file.
            Start with `credits serve`; every flag has a default.
            """,
        version: CreditsVersion.description,
        subcommands: [Serve.self, Migrate.self, Verify.self, Backup.self, Admin.self],
        defaultSubcommand: Serve.self
    )
}

/// The release of this build (printed by `credits --version`, logged at start).
enum CreditsVersion {
    /// Bumped with each issue landed: 0.<issue>.<patch>.
    static let number = "0.14.0"
    /// The API generation and the newest schema migration this build knows.
    static var description: String { "credits \(number) (credits.v1, schema \(Ledger.schemaVersion))" }
}
