import NIOCore

/// Where a call's answer goes: the HTTP/2 connection that carries it, an
/// in-memory recorder (`InMemoryCall`: a call served without a socket), or
/// nowhere once the stream is gone.
///
/// An enum of final classes, not a protocol existential nor a weak
/// reference: one word, a strong reference (a weak one cost 7 % of the
/// server's CPU per GetBalance, see `ServerCall.output`) and static dispatch.
enum CallOutput {
    case connection(GRPCConnectionHandler)
    case memory(InMemoryCall)
    /// The stream closed or the connection went: sends are dropped.
    case detached

    /// The connection holds all the response bytes it may (never for memory).
    var responseBufferFull: Bool {
        switch self {
        case .connection(let connection): return connection.responseBufferFull
        case .memory, .detached: return false
        }
    }

    func waitForResponseBuffer(_ call: ServerCall) {
        if case .connection(let connection) = self { connection.waitForResponseBuffer(call) }
    }

    /// Whether the call may queue another message (see `GRPCConnectionHandler.admitResponseBytes`).
    func admitResponseBytes() -> Bool {
        switch self {
        case .connection(let connection): return connection.admitResponseBytes()
        case .memory, .detached: return true
        }
    }

    /// `delta` response bytes were queued (+) or taken/dropped (−) by a call.
    func responseBytesQueued(_ delta: Int) {
        if case .connection(let connection) = self { connection.responseBytesQueued(delta) }
    }

    func submitResponse(_ call: ServerCall, headers: HeaderFields, hasBody: Bool) {
        switch self {
        case .connection(let connection): connection.submitResponse(call, headers: headers, hasBody: hasBody)
        case .memory(let memory): memory.recordHeaders(headers, hasBody: hasBody)
        case .detached: break
        }
    }

    func submitTrailersNow(_ call: ServerCall, trailers: HeaderFields) {
        switch self {
        case .connection(let connection): connection.submitTrailersNow(call, trailers: trailers)
        case .memory(let memory): memory.recordTrailers(trailers)
        case .detached: break
        }
    }

    /// The call has bytes (or its trailers) ready to send.
    func dataReady(_ call: ServerCall) {
        switch self {
        case .connection(let connection): connection.dataReady(call)
        case .memory(let memory): memory.takeResponseData()
        case .detached: break
        }
    }

    func callBecameWritable(_ call: ServerCall) {
        switch self {
        case .connection(let connection): connection.callBecameWritable(call)
        case .memory(let memory): memory.callBecameWritable()
        case .detached: break
        }
    }

    /// A paused call resumed: what waited is handed on.
    func resumeRequests(_ call: ServerCall) {
        switch self {
        case .connection(let connection): connection.resumeRequests(call)
        case .memory(let memory): memory.deliverRequests()
        case .detached: break
        }
    }

    /// Ends the call for a reason of the transport's (deadline, bad framing,
    /// limits): the client gets `status`, the handler a cancel, and the
    /// request bytes still held are dropped.
    func failCall(_ call: ServerCall, _ status: GRPCStatus) {
        switch self {
        case .connection(let connection): connection.failCall(call, status)
        case .memory(let memory): memory.failCall(status)
        case .detached:
            guard !call.isFinished else { return }
            call.finish(status)
            call.notifyHandlerCancelled()
        }
    }
}
