import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One process per database: `serve`, `migrate`, `admin seed` and every
/// other writer hold an exclusive `flock` on `<database>.lock` for their
/// lifetime. A second one fails at once with the holder's pid. The kernel
/// drops the lock when its process dies, so a lock left by a killed process
/// never blocks a restart. Readers (`verify`, `backup`) take no lock.
public final class DatabaseLock: @unchecked Sendable {
    public struct InUse: Error, CustomStringConvertible, Equatable {
        public let databasePath: String
        /// The holder's pid, as it wrote it (nil if unreadable).
        public let pid: Int32?
        public var description: String {
            "database \(databasePath) is in use by \(pid.map { "pid \($0)" } ?? "another process")"
        }
    }

    public struct Failed: Error, CustomStringConvertible {
        public let lockPath: String
        public let errno: Int32
        public var description: String { "cannot open lock file \(lockPath): \(String(cString: strerror(errno)))" }
    }

    public let lockPath: String
    private var fd: Int32

    public static func lockPath(forDatabase path: String) -> String { path + ".lock" }

    /// Takes the lock or throws `InUse` / `Failed` without waiting.
    public init(databasePath: String) throws {
        let lockPath = Self.lockPath(forDatabase: databasePath)
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failed(lockPath: lockPath, errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            defer { close(fd) }
            if code == EWOULDBLOCK { throw InUse(databasePath: databasePath, pid: Self.readPid(fd)) }
            throw Failed(lockPath: lockPath, errno: code)
        }
        // Ours now: record who holds it, for the message a second process prints.
        let text = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        self.lockPath = lockPath
        self.fd = fd
    }

    private static func readPid(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return Int32(text)
    }

    /// Releases the lock (also done when the process exits, however it exits).
    public func release() {
        guard fd >= 0 else { return }
        _ = flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { release() }
}
