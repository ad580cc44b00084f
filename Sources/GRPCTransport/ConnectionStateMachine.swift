/// The life of one HTTP/2 connection, apart from its session and calls.
/// Pure: each event is a mutating method that makes an allowed transition
/// and says whether the handler acts on it.
///
///     active ──GracefulShutdownEvent──▶ draining(finalGoAwaySent: false)
///     draining(false) ──after the grace──▶ draining(finalGoAwaySent: true)
///     active, draining ──close (idle, stuck, HTTP/2 error, done draining)──▶ closing
///     any ──channel inactive──▶ closed
///
/// Replaces the handler's `draining`, `finalGoAwaySent` and `closing` flags.
struct ConnectionStateMachine {
    enum State: Equatable {
        /// Serving calls.
        case active
        /// A GOAWAY notice went out; calls run on. With `finalGoAwaySent`
        /// (the last stream id served is announced) the connection closes
        /// once the calls it admitted have ended.
        case draining(finalGoAwaySent: Bool)
        /// Closing after what was written has gone out: nothing more is
        /// read, flushed, or scheduled.
        case closing
        /// The channel went inactive.
        case closed
    }

    private(set) var state = State.active

    /// Reads, flushes and timers stop.
    var isClosing: Bool {
        switch state {
        case .active, .draining: return false
        case .closing, .closed: return true
        }
    }

    /// A graceful shutdown began (new calls hear of it at once).
    var isDraining: Bool {
        if case .draining = state { return true }
        return false
    }

    /// The final GOAWAY went out: the connection closes when no call is left.
    var closesWhenCallsEnd: Bool { state == .draining(finalGoAwaySent: true) }

    /// A graceful shutdown: active → draining. True: send the GOAWAY notice
    /// and tell the calls. Ignored when already draining or closing.
    mutating func beginDrain() -> Bool {
        guard case .active = state else { return false }
        state = .draining(finalGoAwaySent: false)
        return true
    }

    /// The grace after the notice passed. True: send the final GOAWAY.
    /// Ignored unless draining with the notice only (closing: nothing is sent).
    mutating func sendFinalGoAway() -> Bool {
        guard state == .draining(finalGoAwaySent: false) else { return false }
        state = .draining(finalGoAwaySent: true)
        return true
    }

    /// The connection is to close (idle, stuck, an HTTP/2 error, drained).
    /// True: close it now; false when already closing or closed.
    mutating func close() -> Bool {
        guard !isClosing else { return false }
        state = .closing
        return true
    }

    /// The channel went inactive: any state → closed.
    mutating func channelClosed() {
        state = .closed
    }
}
