import ArgumentParser
import CreditsAPI
import Foundation
import NIOCore
import Ledger

enum SyncMode: String, ExpressibleByArgument, CaseIterable {
    case full
    case normal
}

/// An error for people at a shell: one line, no Foundation or NIO internals.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }

    /// The plain reason of a file or socket error ("No such file or directory").
    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
        return ns.localizedDescription
    }
}

enum AdminToken {
    /// From the file, else CREDITS_ADMIN_KEY; nil when neither is set.
    static func load(file: String?) throws -> String? {
        if let file {
            guard access(file, R_OK) == 0 else {
                throw CLIError("cannot read the admin key file \(file): \(String(cString: strerror(errno)))")
            }
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw CLIError("cannot read the admin key file \(file): \(CLIError.reason(error))")
            }
            guard text.utf8.count >= 16 else { throw ValidationError("the admin key in \(file) must be at least 16 characters") }
            return text
        }
        if let env = ProcessInfo.processInfo.environment["CREDITS_ADMIN_KEY"], !env.isEmpty {
            guard env.utf8.count >= 16 else { throw ValidationError("CREDITS_ADMIN_KEY must be at least 16 characters") }
            return env
        }
        return nil
    }
}

struct DatabaseOption: ParsableArguments {
    @Option(help: "SQLite database file.")
    var db = "./data/credits.sqlite"
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the schema migrations (serve does this at start too).")
    @OptionGroup var database: DatabaseOption

    func run() throws {
        let applied = try DatabaseAccess.opening(database.db, for: .write) { try Ledger.migrate(path: database.db) }
        print(applied.isEmpty ? "schema is current (version \(Ledger.schemaVersion))" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Recompute every balance from the ledger and check the double-entry sums; exit 1 on any mismatch.")
    @OptionGroup var database: DatabaseOption

    func run() throws {
        let report = try DatabaseAccess.opening(database.db, for: .read) { try Ledger.verify(path: database.db) }
        print(report)
        if !report.ok { throw ExitCode(1) }
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Copy the database with SQLite's online backup (safe while the server runs).")
    @OptionGroup var database: DatabaseOption
    @Option(help: "Destination file (must not exist).")
    var to: String

    func run() throws {
        try DatabaseAccess.check(database.db, for: .read)
        try DatabaseAccess.checkDestination(to)
        try DatabaseAccess.opening(database.db) { try Ledger.backup(path: database.db, to: to) }
        let report = try DatabaseAccess.opening(to) { try Ledger.verify(path: to) }
        print("backup written to \(to); \(report)")
        if !report.ok { throw ExitCode(1) }
    }
}

struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create tenants and API keys directly in the database.",
        subcommands: [CreateTenantCommand.self, CreateKeyCommand.self, SeedCommand.self])
}

struct CreateTenantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create-tenant", abstract: "Create a tenant.")
    @OptionGroup var database: DatabaseOption
    @Option(help: "Tenant id (1–128 printable ASCII).") var id: String
    @Option(help: "Display name.") var name: String
    @Option(help: "ISO 4217 currency code.") var currency: String
    @Flag(help: "Allow directory keys to act for this tenant.") var allowDirectory = false

    func run() throws {
        let ledger = try DatabaseAccess.opening(database.db, for: .write) { try Ledger(path: database.db, options: .adminBesideServer) }
        defer { ledger.close() }
        do {
            _ = try ledger.write(CreateTenant(id: id, name: name, currency: currency, allowDirectory: allowDirectory))
            print("created tenant \(id)")
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

struct CreateKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create-key", abstract: "Create an API key and print its token (shown once).")
    @OptionGroup var database: DatabaseOption
    @Option(help: "Tenant id (not for directory keys).") var tenant: String?
    @Option(help: "staff, app or directory.") var role: String
    @Option(help: "A label for people.") var label = ""

    func run() throws {
        guard let role = Role(rawValue: role) else { throw ValidationError("--role must be staff, app or directory") }
        let ledger = try DatabaseAccess.opening(database.db, for: .write) { try Ledger(path: database.db, options: .adminBesideServer) }
        defer { ledger.close() }
        let keyId = IDs.make("key", clock: ledger.options.clock)
        let secret = Authenticator.newSecret()
        do {
            _ = try ledger.write(CreateAPIKey(keyId: keyId, tenantId: role == .directory ? nil : tenant, role: role, label: label,
                                              secretHash: Authenticator.hash(secret)))
        } catch {
            throw ValidationError("\(error)")
        }
        print("\(keyId).\(secret)")
    }
}

extension Ledger.Options {
    /// Tenants and keys may be created beside a running server: SQLite
    /// serializes the two writers, and no balance cache holds tenants or keys.
    static var adminBesideServer: Ledger.Options {
        var options = Ledger.Options()
        options.exclusive = false
        return options
    }
}
