import Foundation
import Ledger

/// Checks a database path before a command opens it, so that a directory
/// that cannot be created or written, a file that is not SQLite or one the
/// user may not read or write ends the command with one readable line (a
/// `CLIError`) instead of a Foundation error dump or an SQLite code.
enum DatabaseAccess {
    enum Use {
        /// serve, migrate, admin: creates the file (and its directory) if
        /// missing; needs to write the file, its WAL and the lock beside it.
        case write
        /// verify, backup: the file must exist and be readable.
        case read
    }

    /// The first 16 bytes of every SQLite 3 database file.
    static let header = Array("SQLite format 3\0".utf8)

    static func check(_ path: String, for use: Use) throws {
        let directory = directoryOf(path)
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && isDirectory.boolValue {
            throw CLIError("cannot open database \(path): it is a directory")
        }
        if !exists {
            if use == .read { throw CLIError("cannot open database \(path): no such file") }
            try makeDirectories(directory)
            guard access(directory, W_OK | X_OK) == 0 else {
                throw CLIError("cannot create database \(path): directory \(directory) is not writable (\(String(cString: strerror(errno))))")
            }
            return
        }
        guard access(path, R_OK) == 0 else {
            throw CLIError("cannot read database \(path): \(String(cString: strerror(errno)))")
        }
        if use == .write {
            guard access(path, W_OK) == 0 else {
                throw CLIError("cannot write database \(path): \(String(cString: strerror(errno)))")
            }
            guard access(directory, W_OK | X_OK) == 0 else {
                throw CLIError("cannot write database \(path): directory \(directory) is not writable for its journal and lock files (\(String(cString: strerror(errno))))")
            }
        }
        try checkHeader(path)
    }

    /// Where a backup may be written: a new file in an existing, writable directory.
    static func checkDestination(_ path: String) throws {
        if FileManager.default.fileExists(atPath: path) { throw CLIError("cannot write backup \(path): the file exists already") }
        let directory = directoryOf(path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CLIError("cannot write backup \(path): no directory \(directory)")
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            throw CLIError("cannot write backup \(path): directory \(directory) is not writable (\(String(cString: strerror(errno))))")
        }
    }

    /// `check(path, for: use)`, then `opening(path, open)`.
    static func opening<T>(_ path: String, for use: Use, _ open: () throws -> T) throws -> T {
        try check(path, for: use)
        return try opening(path, open)
    }

    /// Runs `open` (which opens the database), turning an SQLite error that
    /// still happens (I/O error, corruption found later, …) into one line.
    static func opening<T>(_ path: String, _ open: () throws -> T) throws -> T {
        do {
            return try open()
        } catch let error as SQLiteError {
            throw CLIError("cannot open database \(path): \(error.message)")
        }
    }

    /// A non-empty file must start with the SQLite header (an empty file is a new database).
    private static func checkHeader(_ path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CLIError("cannot read database \(path): \(String(cString: strerror(errno)))")
        }
        defer { try? handle.close() }
        let bytes: Data
        do {
            bytes = try handle.read(upToCount: header.count) ?? Data()
        } catch {
            throw CLIError("cannot read database \(path): \(CLIError.reason(error))")
        }
        if !bytes.isEmpty && Array(bytes) != header {
            throw CLIError("cannot open database \(path): not an SQLite database")
        }
    }

    private static func directoryOf(_ path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        return directory.isEmpty ? "." : directory
    }

    /// `mkdir -p`, naming the component that failed.
    private static func makeDirectories(_ directory: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return }
            throw CLIError("cannot create the database directory: \(directory) is a file, not a directory")
        }
        let parent = (directory as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != directory { try makeDirectories(parent) }
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw CLIError("cannot create the database directory \(directory): \(String(cString: strerror(errno)))")
        }
    }
}
