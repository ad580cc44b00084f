import NIOCore

// The connection's ends that are not errors: a graceful drain (GOAWAY
// notice, the final GOAWAY after a round trip's grace, close when the
// admitted calls have ended; states in `ConnectionStateMachine`) and the
// idle timeout (one timer per connection, re-armed rather than rescheduled
// per call).

extension GRPCConnectionHandler {
    func beginDrain() {
        guard let session, let context, lifecycle.beginDrain() else { return }
        session.submitShutdownNotice()
        for call in calls.values { call.notifyServerShutdown() }
        flush()
        // The final GOAWAY after a round trip's grace, so that streams the
        // client opened meanwhile are still served.
        context.eventLoop.scheduleTask(in: .milliseconds(200)) {
            guard let session = self.session, self.lifecycle.sendFinalGoAway() else { return }
            session.submitGoAway()
            self.flush()
            if self.calls.isEmpty { self.closeConnection() }
        }
    }

    /// Notes that the connection became idle. One timer per connection checks
    /// when it fires whether the connection has been idle for the whole
    /// timeout, and re-arms itself otherwise: no timer is scheduled and
    /// cancelled per call (measured: that was about 1% of the server's CPU per
    /// GetBalance under h2load).
    func armIdleTimer() {
        guard let context, configuration.idleTimeout > .zero else { return }
        idleSince = context.eventLoop.now
        if idleTask == nil { scheduleIdleCheck(in: configuration.idleTimeout) }
    }

    func scheduleIdleCheck(in delay: TimeAmount) {
        guard let context, !lifecycle.isClosing else { return }
        idleTask = context.eventLoop.scheduleTask(in: delay) { self.idleCheck() }
    }

    func idleCheck() {
        idleTask = nil
        guard !lifecycle.isClosing, let session, let context else { return }
        guard calls.isEmpty else {
            // Busy: it cannot have been idle for a whole timeout before one from now.
            scheduleIdleCheck(in: configuration.idleTimeout)
            return
        }
        let idleFor = context.eventLoop.now - idleSince
        guard idleFor >= configuration.idleTimeout else {
            scheduleIdleCheck(in: configuration.idleTimeout - idleFor)
            return
        }
        logger.debug("closing idle connection")
        session.submitGoAway()
        flush()
        closeConnection()
    }
}
