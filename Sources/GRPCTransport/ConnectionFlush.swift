import NIOCore

// The connection's output: calls ask to send (HEADERS, DATA ready,
// trailers); one flush per event-loop tick (or after the read) takes what
// nghttp2 has ready, at most `flushLimitBytes` at a time, and hands it to
// the channel; writable calls are told after it; errors and ends close the
// connection after what was written has gone out.

extension GRPCConnectionHandler {
    func submitResponse(_ call: ServerCall, headers: HeaderFields, hasBody: Bool) {
        guard let session, calls[call.streamID] === call else { return }
        session.submitResponse(streamID: call.streamID, headers: headers, hasBody: hasBody)
        scheduleFlush()
    }

    /// Ends a streaming response at once with `trailers` (its queued DATA
    /// was dropped): HEADERS with END_STREAM, not behind flow control.
    func submitTrailersNow(_ call: ServerCall, trailers: HeaderFields) {
        guard let session, calls[call.streamID] === call else { return }
        session.submitTrailersNow(streamID: call.streamID, trailers)
        scheduleFlush()
    }

    func dataReady(_ call: ServerCall) {
        guard let session, calls[call.streamID] === call else { return }
        if call.state.dataReady() {
            session.resumeData(streamID: call.streamID)
        }
        scheduleFlush()
    }

    func callBecameWritable(_ call: ServerCall) {
        becameWritable.append(call)
    }

    /// Hands what nghttp2 can send now to the channel, without the rest of
    /// `flush` (safe while events are being processed).
    func drainOutput() {
        guard let session, let context, !lifecycle.isClosing, !inSend, context.channel.isWritable else { return }
        inSend = true
        defer { inSend = false }
        var out = context.channel.allocator.buffer(capacity: 0)
        do {
            _ = try session.send(into: &out, limit: Self.flushLimitBytes)
        } catch {
            if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
            fail(error)
            return
        }
        if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        flushNeeded = true
        scheduleFlush()
    }

    func scheduleFlush() {
        if inRead {
            flushNeeded = true
            return
        }
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.execute {
            self.flushScheduled = false
            self.flush()
        }
    }

    func flush() {
        flushNeeded = false
        guard let session, let context, !lifecycle.isClosing, !inSend else { return }
        guard context.channel.isWritable else { return }  // resumed by channelWritabilityChanged
        var out = context.channel.allocator.buffer(capacity: 0)
        var more = false
        inSend = true
        defer { inSend = false }
        do {
            more = try session.send(into: &out, limit: Self.flushLimitBytes)
            while !more && !endStreamsSent.isEmpty {
                let ended = endStreamsSent
                endStreamsSent.removeAll()
                for streamID in ended where refusedStreams[streamID] == nil && !session.isRemoteClosed(streamID: streamID) {
                    // A call's complete answer while the client still sends:
                    // ask it to stop, without error (RFC 9113 §8.1). Refusals
                    // are left open until the client ends them (`refusedStreams`).
                    session.resetStream(streamID: streamID, errorCode: 0)
                }
                more = try session.send(into: &out, limit: Self.flushLimitBytes)
            }
        } catch {
            if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
            fail(error)
            return
        }
        if out.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
        inSend = false
        processEvents()  // stream closes reported while sending
        notifyWritable()
        if (more || !endStreamsSent.isEmpty) && !lifecycle.isClosing {
            // The rest after the channel has taken this much (or became unwritable).
            scheduleFlush()
        }
        if !session.wantsReadOrWrite || (lifecycle.closesWhenCallsEnd && calls.isEmpty) {
            closeConnection()
        }
    }

    func notifyWritable() {
        guard !becameWritable.isEmpty else { return }
        let ready = becameWritable
        becameWritable.removeAll()
        for call in ready where !call.isFinished {
            call.onWritable?()
        }
    }

    func fail(_ error: HTTP2SessionError) {
        switch error {
        case .fatal(let code, let reason):
            logger.info("closing connection after HTTP/2 error", metadata: ["nghttp2_error": "\(code)", "reason": "\(reason)"])
        }
        if let session, let context {
            // Send what the session queued (usually a GOAWAY) before closing.
            var out = context.channel.allocator.buffer(capacity: 0)
            _ = try? session.send(into: &out, limit: 64 * 1024)
            if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        }
        closeConnection()
    }

    func closeConnection() {
        guard let context, lifecycle.close() else { return }
        // After what is already written has gone out.
        let empty = context.channel.allocator.buffer(capacity: 0)
        context.writeAndFlush(wrapOutboundOut(empty)).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
