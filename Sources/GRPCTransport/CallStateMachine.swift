/// The state of one call, apart from its buffers and callbacks: what has
/// been answered, how far the request got, whether the handler was told of a
/// cancel, whether it heard of a shutdown. Pure: each event is a mutating
/// method that moves the state along an allowed transition and returns what
/// the call must do; `ServerCall` does it. (The shape of NIO's and
/// NIOHTTP2's `*StateMachine` types.)
///
/// Response:
///
///     idle ──startResponse──▶ streaming ──finish──▶ finishing ──trailers taken──▶ done
///       │                        │ ╰──────────────abort───────────────────────────▶ done
///       ╰──finish (trailers-only)───────────────────────────────────────────────────▶ done
///     any ──cancel──▶ cancelled
///
/// Request (paused or not, in each state):
///
///     open ──client half-closes──▶ ended ──end told to the handler──▶ closed
///     open, ended ──the handler takes a broken request over──▶ closed
struct CallStateMachine {
    enum Response {
        /// Nothing sent yet: a finish now is a trailers-only response.
        case idle
        /// Response HEADERS submitted; messages may follow. `dataDeferred`:
        /// nghttp2's data source waits for `dataReady` (the queue was empty).
        case streaming(dataDeferred: Bool)
        /// Trailers are ready and go out once the queued messages have.
        case finishing(HeaderFields, dataDeferred: Bool)
        /// Everything is submitted.
        case done
        /// The client reset the call, or its connection went.
        case cancelled
    }

    enum Request: Equatable {
        /// Messages may arrive.
        case open(paused: Bool)
        /// The client half-closed; the handler has not been told yet.
        case ended(paused: Bool)
        /// Nothing more reaches the handler: it was told of the end, or it
        /// took a broken request over (`ServerCall.onRequestFailure`).
        case closed(paused: Bool)
    }

    /// Whether the handler still hears of events.
    enum Handler: Equatable {
        case active
        /// Told of a cancel (`handleCancel`, the `onCancelled` callbacks), or
        /// never had one to tell (a plain-HTTP refusal): gets nothing more.
        case cancelled
    }

    enum Shutdown: Equatable {
        case running
        /// The server began a graceful shutdown and the call was told.
        case notified
    }

    /// Why the handler was told it may not write; it waits for `onWritable`.
    struct WritabilityWaits: OptionSet {
        let rawValue: UInt8
        /// Its queue went above the high watermark; cleared below the low one.
        static let queue = WritabilityWaits(rawValue: 1)
        /// The connection's response buffer was full; cleared when it drains.
        static let connectionBuffer = WritabilityWaits(rawValue: 2)
    }

    private(set) var response: Response
    private(set) var request: Request
    private(set) var handler: Handler
    private(set) var shutdown = Shutdown.running
    var writabilityWaits: WritabilityWaits = []

    init() {
        response = .idle
        request = .open(paused: false)
        handler = .active
    }

    /// A plain-HTTP answer (405, 415): its HEADERS are submitted with the
    /// call, it has no handler, and it ends once its body is taken.
    static func plainHTTPAnswer() -> CallStateMachine {
        var state = CallStateMachine()
        state.response = .finishing(.list([]), dataDeferred: false)
        state.request = .closed(paused: false)
        state.handler = .cancelled
        return state
    }

    // MARK: Response

    /// True once the call was finished or cancelled: further sends are ignored.
    var isFinished: Bool {
        switch response {
        case .idle, .streaming: return false
        case .finishing, .done, .cancelled: return true
        }
    }

    var isCancelled: Bool {
        if case .cancelled = response { return true }
        return false
    }

    /// HEADERS or a first message: idle → streaming. True: submit the
    /// response HEADERS now. Ignored in any other state.
    mutating func startResponse() -> Bool {
        guard case .idle = response else { return false }
        response = .streaming(dataDeferred: false)
        return true
    }

    enum FinishAction {
        /// Nothing was sent: HEADERS with the status, END_STREAM (the state is `done`).
        case submitTrailersOnly
        /// The trailers wait behind the queued messages (the state is `finishing`).
        case trailersQueued
    }

    /// `ServerCall.finish`: idle → done, streaming → finishing. The call
    /// filters a finish after the end (`isFinished`): one here is a bug.
    mutating func finish(trailers: @autoclosure () -> HeaderFields) -> FinishAction {
        switch response {
        case .idle:
            response = .done
            return .submitTrailersOnly
        case .streaming(let dataDeferred):
            response = .finishing(trailers(), dataDeferred: dataDeferred)
            return .trailersQueued
        case .finishing, .done, .cancelled:
            preconditionFailure("finish after the call ended (ServerCall filters it with isFinished)")
        }
    }

    enum AbortAction {
        /// Nothing was streamed: a plain finish does.
        case finish
        /// Drop the queue and send the trailers now (the state is `done`).
        case submitTrailersNow
    }

    /// `ServerCall.abort`: streaming → done. Filtered like `finish`.
    mutating func abort() -> AbortAction {
        switch response {
        case .idle:
            return .finish
        case .streaming:
            response = .done
            return .submitTrailersNow
        case .finishing, .done, .cancelled:
            preconditionFailure("abort after the call ended (ServerCall filters it with isFinished)")
        }
    }

    /// New bytes or the trailers are queued. True: nghttp2's deferred data
    /// source must be resumed (and is no longer deferred).
    mutating func dataReady() -> Bool {
        switch response {
        case .streaming(dataDeferred: true):
            response = .streaming(dataDeferred: false)
            return true
        case .finishing(let trailers, dataDeferred: true):
            response = .finishing(trailers, dataDeferred: false)
            return true
        case .idle, .streaming, .finishing, .done, .cancelled:
            return false
        }
    }

    enum EmptyQueueAction {
        /// The last DATA goes out; the stream ends with these trailers (state `done`).
        case endStream(trailers: HeaderFields)
        /// Nothing to send now: defer the data source until `dataReady`.
        case deferData
        /// Bytes were written this time; nghttp2 asks again.
        case none
    }

    /// nghttp2 took every queued byte (`wroteBytes`: some of them in this
    /// fill). finishing → done; streaming with nothing written → deferred.
    mutating func queueEmptied(wroteBytes: Bool) -> EmptyQueueAction {
        switch response {
        case .finishing(let trailers, _):
            response = .done
            return .endStream(trailers: trailers)
        case .streaming:
            guard !wroteBytes else { return .none }
            response = .streaming(dataDeferred: true)
            return .deferData
        case .idle, .done, .cancelled:
            // (No data source is asked for in these states; answered as an empty one.)
            return wroteBytes ? .none : .deferData
        }
    }

    enum CancelAction {
        /// Already cancelled: nothing to do.
        case none
        /// Drop queued bytes and callbacks; tell the handler if it had not
        /// finished the call.
        case cancel(notifyHandler: Bool)
    }

    /// Client reset, connection gone: any state but cancelled → cancelled.
    mutating func cancel() -> CancelAction {
        switch response {
        case .cancelled:
            return .none
        case .idle, .streaming:
            response = .cancelled
            return .cancel(notifyHandler: true)
        case .finishing, .done:
            response = .cancelled
            return .cancel(notifyHandler: false)
        }
    }

    // MARK: Handler

    /// True once: the handler and the `onCancelled` callbacks must be told now.
    mutating func cancelHandler() -> Bool {
        guard case .active = handler else { return false }
        handler = .cancelled
        return true
    }

    /// The handler hears of messages and of the end.
    var handlerIsActive: Bool { handler == .active }

    // MARK: Shutdown

    /// True once: the `onServerShutdown` callbacks run now (if the call is not finished).
    mutating func serverShutdown() -> Bool {
        guard case .running = shutdown else { return false }
        shutdown = .notified
        return true
    }

    // MARK: Request

    var isPaused: Bool {
        switch request {
        case .open(let paused), .ended(let paused), .closed(let paused): return paused
        }
    }

    /// Messages may still reach the handler: the call is not finished, the
    /// request not closed, and the call not paused.
    var deliversMessages: Bool {
        guard !isFinished, !isPaused else { return false }
        if case .closed = request { return false }
        return true
    }

    /// The call still takes request bytes (else they are thrown away and
    /// their window given back at once).
    var takesRequestBytes: Bool {
        guard !isFinished else { return false }
        if case .closed = request { return false }
        return true
    }

    /// The client half-closed and the end waits for a resume.
    var endIsPending: Bool { request == .ended(paused: false) }

    mutating func pauseRequests() {
        switch request {
        case .open: request = .open(paused: true)
        case .ended: request = .ended(paused: true)
        case .closed: request = .closed(paused: true)
        }
    }

    /// True when the call was paused (what waited is handed on now).
    mutating func resumeRequests() -> Bool {
        switch request {
        case .open(true): request = .open(paused: false)
        case .ended(true): request = .ended(paused: false)
        case .closed(true): request = .closed(paused: false)
        case .open(false), .ended(false), .closed(false): return false
        }
        return true
    }

    /// The client half-closed: open → ended. True: tell the handler now
    /// (`endDelivered`); false when paused (told on resume) or when the
    /// request was already ended or closed (ignored).
    mutating func requestEnded() -> Bool {
        guard case .open(let paused) = request else { return false }
        request = .ended(paused: paused)
        return !paused
    }

    /// ended → closed. True (once): the handler is told of the end now, if
    /// the call is not finished.
    mutating func endDelivered() -> Bool {
        guard case .ended(let paused) = request else { return false }
        request = .closed(paused: paused)
        return true
    }

    /// The handler answers a broken request itself: nothing more is delivered.
    mutating func requestTakenOver() {
        request = .closed(paused: isPaused)
    }
}
