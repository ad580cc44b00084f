import GRPCClient

/// The shared client session (GRPCClient.H2ClientSession) driven by bytes for
/// tests against an EmbeddedChannel: `outbound()` gives what to feed the
/// server, `receive` takes what the server wrote. Keeps every response, open
/// or finished, by stream id.
final class H2TestClient {
    typealias Response = H2Response

    let session: H2ClientSession
    private var finished: [Int32: H2Response] = [:]

    /// With `manualWindow` the client sends no WINDOW_UPDATE of its own: the
    /// test grants window with `grantWindow`.
    init(initialWindowBytes: UInt32 = 1 << 20, manualWindow: Bool = false) {
        var options = H2ClientSession.Options()
        options.initialWindowBytes = initialWindowBytes
        options.manualWindow = manualWindow
        options.keepsHeaderFields = true
        session = try! H2ClientSession(options: options)
    }

    /// Every stream's response: finished ones and what open ones have received so far.
    var responses: [Int32: Response] {
        collectFinished()
        return finished.merging(session.openResponses) { old, _ in old }
    }
    var goAwayReceived: Bool { session.goawayLastStreamID != nil }
    var pingAcks: Int { session.pingAcks }

    /// Opens a stream. `body` is sent as DATA; `endStream` half-closes after it.
    @discardableResult
    func request(path: String, headers extra: [(String, String)] = [], method: String = "POST",
                 contentType: String? = "application/grpc", body: [UInt8] = [], endStream: Bool = true) -> Int32 {
        var fields: [(String, String)] = [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
        if let contentType { fields.append(("content-type", contentType)) }
        fields.append(("te", "trailers"))
        fields += extra
        return try! session.submit(headers: H2HeaderBlock(fields), body: body, endStream: endStream)
    }

    /// Appends more request DATA to an open stream.
    func send(streamID: Int32, _ bytes: [UInt8], end: Bool = false) { session.send(streamID: streamID, bytes, end: end) }
    func reset(streamID: Int32, code: UInt32 = 8) { session.reset(streamID: streamID, code: code) }
    /// Changes SETTINGS_INITIAL_WINDOW_SIZE (opens or closes every stream's window).
    func setInitialWindow(_ bytes: UInt32) { session.setInitialWindow(bytes) }
    /// WINDOW_UPDATE of `bytes` for `streamID` and for the connection.
    func grantWindow(streamID: Int32, bytes: Int32) { session.grantWindow(streamID: streamID, bytes: bytes) }
    /// What the server's window still lets this client send on `streamID`.
    func streamSendWindow(_ streamID: Int32) -> Int { session.streamSendWindow(streamID) }
    /// Request body bytes of `streamID` not sent yet.
    func unsentBodyBytes(_ streamID: Int32) -> Int { session.unsentBodyBytes(streamID) }
    func ping() { session.ping() }

    func outbound() -> [UInt8] { try! session.outbound() }

    func receive(_ bytes: [UInt8]) {
        do {
            try session.receive(bytes)
        } catch {
            preconditionFailure("client could not parse server output: \(error)")
        }
        collectFinished()
    }

    /// Streams close on receive or on send (the last DATA of a stream the server already ended).
    private func collectFinished() {
        for call in session.takeCompleted() { finished[call.response.streamID] = call.response }
    }
}

/// Frames one gRPC message.
func grpcFrame(_ payload: [UInt8], compressed: Bool = false) -> [UInt8] {
    GRPCFraming.frame(payload, compressed: compressed)
}
