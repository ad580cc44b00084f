import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The PEM files a TLS server is configured from.
public struct TLSFiles: Sendable, Equatable {
    /// The server certificate, then any intermediates (PEM).
    public var certificateChain: String
    /// The certificate's private key (PEM, unencrypted).
    public var privateKey: String
    /// CA certificates client certificates must chain to (PEM). Set: client
    /// certificates are required and verified (mTLS). Nil: none are asked for.
    public var clientCA: String?

    public init(certificateChain: String, privateKey: String, clientCA: String? = nil) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.clientCA = clientCA
    }

    var all: [String] { [certificateChain, privateKey] + (clientCA.map { [$0] } ?? []) }
}

/// Why TLS files could not be used: one line for people, naming the file.
public struct TLSFileError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A loaded server TLS context and what it serves, for logs.
public struct TLSIdentity: Sendable {
    public let context: NIOSSLContext
    /// Serial number of the leaf certificate, hex.
    public let serial: String
    /// Subject of the leaf certificate (its common name when it has one).
    public let subject: String
    public let mutualTLS: Bool

    /// TLS 1.2 at least, ALPN offering `h2` only (a client that does not
    /// negotiate it is closed after the handshake), and with a client CA:
    /// client certificates required and verified against it.
    public static func load(_ files: TLSFiles) throws(TLSFileError) -> TLSIdentity {
        let chainBytes = try readFile(files.certificateChain, what: "certificate")
        let keyBytes = try readFile(files.privateKey, what: "private key")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(chainBytes)
        } catch {
            throw TLSFileError("the certificate file \(files.certificateChain) holds no valid PEM certificate")
        }
        guard let leaf = chain.first else {
            throw TLSFileError("the certificate file \(files.certificateChain) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem)
        } catch {
            throw TLSFileError("the private key file \(files.privateKey) holds no valid unencrypted PEM private key")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["h2"]
        if let caFile = files.clientCA {
            let caBytes = try readFile(caFile, what: "client CA")
            let roots = (try? NIOSSLCertificate.fromPEMBytes(caBytes)) ?? []
            guard !roots.isEmpty else {
                throw TLSFileError("the client CA file \(caFile) holds no valid PEM certificate")
            }
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(roots)
            configuration.sendCANameList = true
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch NIOSSLError.failedToLoadPrivateKey {
            // BoringSSL checks the key against the certificate when it is set.
            throw TLSFileError("the private key in \(files.privateKey) does not match the certificate in \(files.certificateChain)")
        } catch {
            throw TLSFileError("cannot use the certificate \(files.certificateChain) with the key \(files.privateKey): \(error)")
        }
        return TLSIdentity(
            context: context,
            serial: hex(leaf.serialNumber),
            subject: subjectText(leaf),
            mutualTLS: files.clientCA != nil)
    }

    /// PEM files are small; a larger one is refused, not read.
    static let maxFileBytes = 1 << 20

    private static func readFile(_ path: String, what: String) throws(TLSFileError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw TLSFileError("cannot read the \(what) file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TLSFileError("cannot read the \(what) file \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > maxFileBytes {
                throw TLSFileError("the \(what) file \(path) is larger than \(maxFileBytes) bytes: not a PEM file")
            }
        }
        guard !bytes.isEmpty else { throw TLSFileError("the \(what) file \(path) is empty") }
        return bytes
    }

    private static func subjectText(_ certificate: NIOSSLCertificate) -> String {
        if let cn = certificate.subjectName.first(where: { $0.type == .commonName }) { return "CN=\(cn.value)" }
        let parts = certificate.subjectName.map(\.value)
        return parts.isEmpty ? "(none)" : parts.joined(separator: ",")
    }
}

/// Upper-case hex, two digits a byte (as `openssl x509 -serial` prints).
private func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789ABCDEF")
    return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] })
}

/// The TLS context new connections get, reloaded from its files on demand
/// (SIGHUP) or when they change (polled). A connection keeps the context it
/// started with; a reload that fails leaves the one in service in place.
public final class TLSContextStore: @unchecked Sendable {  // state behind locks; files and logger immutable
    public let files: TLSFiles
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let queue = DispatchQueue(label: "credits.tls-reload")
    private let timer = NIOLockedValueBox<DispatchSourceTimer?>(nil)

    private struct State {
        var identity: TLSIdentity
        /// Stamps of the files at the last load attempt (good or bad), so a
        /// bad file is reported once, not at every poll.
        var stamps: [FileStamp?]
    }

    /// Loads the files now; throws when they cannot serve.
    public init(files: TLSFiles, logger: Logger) throws(TLSFileError) {
        self.files = files
        self.logger = logger
        let stamps = files.all.map(FileStamp.init(path:))
        let identity = try TLSIdentity.load(files)
        state = NIOLockedValueBox(State(identity: identity, stamps: stamps))
    }

    /// What new connections get now.
    public var identity: TLSIdentity { state.withLockedValue { $0.identity } }

    /// Loads the files again. Good: new connections get the new context.
    /// Bad: an error line, and the context in service stays.
    @discardableResult
    public func reload(trigger: String) -> Bool {
        queue.sync { reloadLocked(trigger: trigger, stamps: files.all.map(FileStamp.init(path:))) }
    }

    /// Reloads when any file's modification time, size or inode differs from
    /// the last attempt.
    public func reloadIfChanged() {
        queue.sync {
            let now = files.all.map(FileStamp.init(path:))
            guard now != state.withLockedValue({ $0.stamps }) else { return }
            _ = reloadLocked(trigger: "files changed", stamps: now)
        }
    }

    private func reloadLocked(trigger: String, stamps: [FileStamp?]) -> Bool {
        state.withLockedValue { $0.stamps = stamps }
        do {
            let identity = try TLSIdentity.load(files)
            let old = state.withLockedValue { state -> TLSIdentity in
                defer { state.identity = identity }
                return state.identity
            }
            logger.notice("TLS certificate reloaded; new connections use it, open ones keep theirs", metadata: [
                "trigger": "\(trigger)", "serial": "\(identity.serial)", "subject": "\(identity.subject)",
                "previous_serial": "\(old.serial)",
            ])
            return true
        } catch {
            logger.error("TLS reload refused; the certificate in service stays", metadata: [
                "trigger": "\(trigger)", "error": "\(error)",
                "serial_in_service": "\(identity.serial)",
            ])
            return false
        }
    }

    /// Checks the files every `interval` (zero: never) until `stopWatching`.
    public func startWatching(every interval: TimeAmount) {
        guard interval > .zero else { return }
        let source = DispatchSource.makeTimerSource(queue: .global())
        let ms = Int(interval.nanoseconds / 1_000_000)
        source.schedule(deadline: .now() + .milliseconds(ms), repeating: .milliseconds(ms))
        source.setEventHandler { [weak self] in self?.reloadIfChanged() }
        timer.withLockedValue { $0?.cancel(); $0 = source }
        source.resume()
    }

    public func stopWatching() {
        timer.withLockedValue { $0?.cancel(); $0 = nil }
    }
}

/// What identifies one version of a file without reading it.
struct FileStamp: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modifiedSeconds: Int
    var modifiedNanoseconds: Int
    var changedSeconds: Int
    var changedNanoseconds: Int

    /// Nil when the file cannot be looked at (then a change to readable counts).
    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modifiedSeconds = Int(info.st_mtim.tv_sec)
        modifiedNanoseconds = Int(info.st_mtim.tv_nsec)
        changedSeconds = Int(info.st_ctim.tv_sec)
        changedNanoseconds = Int(info.st_ctim.tv_nsec)
    }
}

/// Sits behind the TLS handler until the handshake is over: closes a
/// connection whose handshake has not finished within the timeout, or that
/// did not negotiate `h2` by ALPN; then puts the connection's gRPC handler in
/// its place (the same one an h2c connection gets) and leaves.
final class TLSHandshakeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let timeout: TimeAmount
    private let logger: Logger
    private let makeConnectionHandler: () -> ChannelHandler
    private var timeoutTask: Scheduled<Void>?
    private var done = false

    init(timeout: TimeAmount, logger: Logger, makeConnectionHandler: @escaping () -> ChannelHandler) {
        self.timeout = timeout
        self.logger = logger
        self.makeConnectionHandler = makeConnectionHandler
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armTimeout(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armTimeout(context: context)
        context.fireChannelActive()
    }

    private func armTimeout(context: ChannelHandlerContext) {
        guard timeoutTask == nil, !done, timeout > .zero else { return }
        let channel = context.channel
        let logger = self.logger
        let seconds = Double(timeout.nanoseconds) / 1e9
        timeoutTask = context.eventLoop.scheduleTask(in: timeout) {
            logger.debug("closing connection: TLS handshake not finished in time", metadata: [
                "peer": "\(channel.remoteAddress?.description ?? "unknown")", "timeout_seconds": "\(seconds)",
            ])
            channel.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeoutTask?.cancel()
        timeoutTask = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After the handshake (while this handler leaves) data goes on to the
        // HTTP/2 handler. The TLS handler passes no application data before
        // it reports the handshake done; if it ever did, it is not ours to
        // guess at.
        guard done else {
            logger.debug("closing connection: data before the TLS handshake finished")
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted(let negotiated) = event {
            timeoutTask?.cancel()
            timeoutTask = nil
            done = true
            guard negotiated == "h2" else {
                logger.debug("closing connection: the client did not negotiate h2 by ALPN", metadata: [
                    "peer": "\(context.channel.remoteAddress?.description ?? "unknown")",
                    "alpn": "\(negotiated ?? "none")",
                ])
                context.close(promise: nil)
                return
            }
            do {
                try context.pipeline.syncOperations.addHandler(makeConnectionHandler(), position: .after(self))
            } catch {
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } else if event is GracefulShutdownEvent {
            // No call can be open before the handshake: nothing to drain.
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !done else {
            context.fireErrorCaught(error)
            return
        }
        // Failed handshakes (no or a wrong client certificate, plain HTTP/2
        // on a TLS port, an unsupported version) end up here.
        logger.debug("closing connection: TLS handshake failed", metadata: [
            "peer": "\(context.channel.remoteAddress?.description ?? "unknown")", "error": "\(error)",
        ])
        context.close(promise: nil)
    }
}
