import ArgumentParser
import CreditsAPI
import Foundation
import Ledger
import LedgerSeed

/// `credits admin seed`: a new tenant with K clients and L ledger entries,
/// written offline straight into the database (scale benchmarks, issue 5).
struct SeedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed",
        abstract: "Create a tenant with K clients and L ledger entries fast, offline (for scale benchmarks).",
        discussion: """
            Writes straight into the database in one SQLite transaction (all or nothing), so stop the \
            server on it first. Creates the tenant — an existing tenant id is refused: seed a new id to \
            add more — a staff API key whose token is written to --token-file (mode 0600) and printed \
            on stdout, four credit packages, and exactly L ledger entries over the last --history-days: \
            package purchases and credit orders (lots expiring one to five years from now, or never), \
            spends, holds captured whole or in part or released, and refunds. Each client's last entry \
            is a credit order of --reserve-minor without expiry, so every client ends with at least that \
            much available. No idempotency records are written. Progress and a summary go to stderr.

            For speed the connection runs with synchronous=OFF and a large cache, the secondary indexes \
            of the tables it fills are built again after the load (when the seed adds at least as many \
            entries as the database holds), and with no other connection on the file it uses a rollback \
            journal; then the normal settings and WAL mode are restored and the file is synced. \
            Check the result with `credits verify --db PATH`. An interrupted seed leaves nothing behind: \
            the next read-write open (`credits migrate`, `serve`, another seed) rolls it back and returns \
            the file to WAL mode; run `credits migrate --db PATH` before a read-only `verify` or `backup`.
            """)

    @OptionGroup var database: DatabaseOption
    @Option(help: "Id of the tenant to create (must not exist).") var tenant: String
    @Option(help: "Number of clients K: ids <client-prefix>0 … <client-prefix>K-1.") var clients: Int
    @Option(help: "Ledger entries L in total, exactly (at least K: one reserve entry per client).") var entries: Int
    @Option(help: "Where to write the staff token (mode 0600; replaced if it exists).") var tokenFile: String
    @Option(help: "Client id prefix (loadgen's default).") var clientPrefix = "lg-client-"
    @Option(help: "Center id of every entry and lot (loadgen's default).") var center = "c1"
    @Option(help: "The tenant's ISO 4217 currency.") var currency = "EUR"
    @Option(help: "Random seed: the same seed gives the same history (ids stay random).") var seed: UInt64 = 1
    @Option(help: "Entry times are spread over this many days before now.") var historyDays = 365
    @Option(help: "Each client's final credit order (no expiry), in minor units.") var reserveMinor: Int64 = 2_000_000
    @Option(help: "SQLite page cache during the seed, MiB.") var cacheMib = 2_048
    @Flag(help: "No progress lines.") var quiet = false

    func run() throws {
        let keyId = IDs.make("key", clock: SystemClock())
        let secret = Authenticator.newSecret()
        var plan = BulkSeedPlan(tenantId: tenant, tenantName: "seeded \(tenant)", clients: clients, entries: entries)
        plan.currency = currency
        plan.clientPrefix = clientPrefix
        plan.centerId = center
        plan.randomSeed = seed
        plan.historyDays = historyDays
        plan.reserveMinor = reserveMinor
        plan.cacheMiB = cacheMib
        plan.staffKey = .init(keyId: keyId, label: "seed", secretHash: Authenticator.hash(secret))
        do {
            try plan.validate()
        } catch {
            throw ValidationError(Self.describe(error))
        }
        try TokenFile.checkWritable(tokenFile)
        try DatabaseAccess.check(database.db, for: .write)

        // One process per database, for the whole seed.
        let lock = try DatabaseLock(databasePath: database.db)
        defer { lock.release() }
        var progress = Progress(total: entries, quiet: quiet)
        let report: BulkSeedReport
        do {
            report = try BulkSeed.run(path: database.db, plan: plan) { progress.update($0) }
        } catch let error as LedgerError {
            if case .invalidArgument = error { throw ValidationError(Self.describe(error)) }
            throw SeedFailure(description: Self.describe(error))
        }
        let token = "\(keyId).\(secret)"
        try TokenFile.write(token, to: tokenFile)
        let bytes = Self.fileBytes(database.db)
        let rate = Double(report.entries) / max(report.totalSeconds, 1e-9)
        let perMillion = Double(bytes) / Double(report.entries) * 1e6 / 1_048_576
        Stderr.line("""
            seeded tenant \(report.tenantId) in \(database.db): \(report.clients) clients, \(report.entries) entries \
            (\(report.lots) lots, \(report.spends) spends, \(report.holds) holds, \(report.reversals) refunds, \
            \(report.allocations) allocations)
            time: \(Self.fixed(report.insertSeconds)) s insert + \(Self.fixed(report.indexSeconds)) s sorted moves and \
            index builds + \(Self.fixed(report.commitSeconds)) s commit + \(Self.fixed(report.checkpointSeconds)) s checkpoint \
            = \(Self.fixed(report.totalSeconds)) s, \(Int(rate.rounded())) entries/s\
            \(report.rollbackJournal ? "" : " (WAL mode: another connection has the database open)")\
            \(report.indexesRebuilt ? "" : " (indexes kept: the database held more entries than the seed adds)")
            database: \(Self.fixed(Double(bytes) / 1_048_576)) MiB (\(Self.fixed(perMillion)) MiB per million entries, whole file)
            staff token written to \(tokenFile)
            """)
        print(token)
    }

    static func describe(_ error: LedgerError) -> String {
        switch error {
        case .invalidArgument(let violations):
            return violations.map { "\($0.field): \($0.description)" }.joined(separator: "; ")
        case .alreadyExists(let kind, let id):
            return "\(kind) \(id) exists already: seed a new tenant id (or a new database)"
        default:
            return "\(error)"
        }
    }

    static func fixed(_ value: Double) -> String { String(format: "%.1f", value) }

    static func fileBytes(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }

    /// Progress on stderr about every five seconds.
    struct Progress {
        let total: Int
        let quiet: Bool
        let started = Self.seconds()
        var lastPrinted = Self.seconds()

        init(total: Int, quiet: Bool) {
            self.total = total
            self.quiet = quiet
        }

        mutating func update(_ written: Int) {
            let now = Self.seconds()
            guard !quiet, now - lastPrinted >= 5 else { return }
            lastPrinted = now
            let elapsed = now - started
            Stderr.line("seed: \(written) / \(total) entries, \(SeedCommand.fixed(elapsed)) s, \(Int((Double(written) / elapsed).rounded())) entries/s")
        }

        static func seconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
    }
}

/// A failure after the arguments were accepted (printed without the usage text).
struct SeedFailure: Error, CustomStringConvertible {
    var description: String
}

enum TokenFile {
    /// Fails before the seed, not after it, when the token cannot be written.
    static func checkWritable(_ path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let dir = directory.isEmpty ? "." : directory
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue,
              FileManager.default.isWritableFile(atPath: dir) else {
            throw ValidationError("--token-file: directory \(dir) does not exist or is not writable")
        }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ValidationError("--token-file: \(path) is a directory")
        }
    }

    /// Writes `token` and a newline to a new file of mode 0600, then renames it over `path`.
    static func write(_ token: String, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw SeedFailure(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array((token + "\n").utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw SeedFailure(description: "cannot write the token to \(path): \(String(cString: strerror(errno)))")
        }
    }
}

enum Stderr {
    static func line(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
