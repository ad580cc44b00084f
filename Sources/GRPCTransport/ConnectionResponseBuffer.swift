import CNghttp2
import NIOCore

// The connection's response buffer: the response bytes its calls hold
// queued, bounded per connection and per server; calls wait (onWritable)
// while it is full; a connection whose full buffer does not drain is closed.

extension GRPCConnectionHandler {
    /// The connection holds all the response bytes it may: its own cap, or
    /// the server's budget while it holds any.
    var responseBufferFull: Bool {
        queuedResponseBytes >= configuration.maxResponseBufferBytesPerConnection
            || (queuedResponseBytes > 0 && configuration.responseBudget.isExhausted)
    }

    /// Called by a call that found itself not writable because of the buffer.
    func waitForResponseBuffer(_ call: ServerCall) {
        guard !call.state.writabilityWaits.contains(.connectionBuffer) else { return }
        call.state.writabilityWaits.insert(.connectionBuffer)
        waitingForBuffer.append(call)
    }

    /// Whether a call may queue another message. When the buffer is full,
    /// first hands what nghttp2 can send to the channel.
    func admitResponseBytes() -> Bool {
        guard responseBufferFull else { return true }
        drainOutput()
        return !responseBufferFull
    }

    /// Counts `delta` response bytes queued (+) or taken/dropped (−) by a call.
    func responseBytesQueued(_ delta: Int) {
        queuedResponseBytes += delta
        configuration.responseBudget.add(delta)
        assert(queuedResponseBytes >= 0)
        if delta > 0 {
            peakQueuedResponseBytes = max(peakQueuedResponseBytes, queuedResponseBytes)
            if queuedResponseBytes >= configuration.maxResponseBufferBytesPerConnection && stuckTask == nil {
                scheduleStuckCheck(drainedBefore: drainedResponseBytes)
            }
            return
        }
        drainedResponseBytes -= delta
        if !waitingForBuffer.isEmpty, queuedResponseBytes <= configuration.maxResponseBufferBytesPerConnection / 2,
           queuedResponseBytes == 0 || !configuration.responseBudget.isExhausted {
            // Half drained: the waiting calls may send again.
            for call in waitingForBuffer {
                call.state.writabilityWaits.remove(.connectionBuffer)
                becameWritable.append(call)
            }
            waitingForBuffer.removeAll()
            scheduleFlush()
        }
    }

    /// Checks after a stuck timeout that a full buffer drained at least a
    /// little; closes the connection if it did not.
    func scheduleStuckCheck(drainedBefore: Int) {
        guard let context, !lifecycle.isClosing, configuration.stuckTimeout > .zero else { return }
        stuckTask = context.eventLoop.scheduleTask(in: configuration.stuckTimeout) {
            self.stuckTask = nil
            guard !self.lifecycle.isClosing, self.responseBufferFull else { return }
            guard self.drainedResponseBytes - drainedBefore >= Self.stuckProgressBytes else {
                self.closeStuckConnection()
                return
            }
            self.scheduleStuckCheck(drainedBefore: self.drainedResponseBytes)
        }
    }

    func closeStuckConnection() {
        guard let session, let context, !lifecycle.isClosing else { return }
        logger.info("closing a connection whose responses do not drain", metadata: [
            "queued_response_bytes": "\(queuedResponseBytes)",
            "stuck_seconds": "\(configuration.stuckTimeout.nanoseconds / 1_000_000_000)",
        ])
        session.submitGoAway(errorCode: UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue))
        var out = context.channel.allocator.buffer(capacity: 0)
        _ = try? session.send(into: &out, limit: 64 * 1024)
        if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
        context.flush()
        // Not after the writes complete: this peer does not read.
        _ = lifecycle.close()
        context.close(promise: nil)
    }
}
