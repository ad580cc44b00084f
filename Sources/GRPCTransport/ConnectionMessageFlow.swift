import NIOCore

// The connection's inbound message flow: DATA from nghttp2 goes into each
// call's deframer, complete messages (and the request's end) reach the
// handler unless the call is paused, the stream and connection receive
// windows are given back as the calls take the bytes, and the partly received
// bytes are bounded per connection and per server. Refused streams' bodies
// are counted and thrown away.

extension GRPCConnectionHandler {
    func sessionDidReceiveData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        // The connection window comes back at once, whatever the stream: one
        // paused or refused stream never stalls the others. The stream's own
        // window comes back when its call took the bytes (`receiveData`).
        session?.consumeConnection(bytes.count)
        if let discarded = refusedStreams[streamID] {
            session?.consumeStream(streamID, bytes.count)
            discardRefusedBody(streamID: streamID, discarded: discarded + bytes.count)
            return
        }
        // The call may not exist yet (its HEADERS are in the same read); drop
        // only what a finished call would throw away anyway.
        if let call = calls[streamID], call.isFinished {
            session?.consumeStream(streamID, bytes.count)
            return
        }
        var buffer = context!.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        events.append(.data(streamID: streamID, buffer))
    }

    /// Counts the body bytes a refused stream sent; past the limit, asks the
    /// client once to stop (RST_STREAM NO_ERROR, queued in nghttp2).
    func discardRefusedBody(streamID: Int32, discarded: Int) {
        guard discarded > Self.refusedBodyLimitBytes else {
            refusedStreams[streamID] = discarded
            return
        }
        refusedStreams.removeValue(forKey: streamID)  // reset once; what still arrives is dropped as for any finished stream
        session?.resetStream(streamID: streamID, errorCode: 0)
        flushNeeded = true
    }

    func receiveData(streamID: Int32, bytes: ByteBuffer) {
        guard let call = calls[streamID], call.state.takesRequestBytes else {
            // No call takes them (refused, reset, finished, request given up): the window comes back now.
            session?.consumeStream(streamID, bytes.readableBytes)
            return
        }
        let before = call.deframer.bufferedBytes
        call.deframer.append(bytes)
        call.unconsumedRequestBytes += bytes.readableBytes
        inboundBytesBuffered(call.deframer.bufferedBytes - before)
        if bufferedInboundBytes > configuration.maxBufferedBytesPerConnection {
            failRequest(call, GRPCStatus(.resourceExhausted, "too many partly received bytes on this connection"))
            return
        }
        if call.deframer.bufferedBytes > before && configuration.requestBudget.isExhausted {
            failRequest(call, GRPCStatus(.resourceExhausted, "too many partly received bytes on this server"))
            return
        }
        drainMessages(call)
        giveBackWindow(call)
    }

    /// Gives the stream's receive window back for the bytes its call took:
    /// all of them, except, while the call is paused, those still waiting
    /// in its deframer (so what waits is bounded by the stream window).
    func giveBackWindow(_ call: ServerCall) {
        let waiting = call.state.isPaused && !call.isFinished ? call.deframer.bufferedBytes : 0
        let taken = call.unconsumedRequestBytes - waiting
        guard taken > 0 else { return }
        call.unconsumedRequestBytes -= taken
        session?.consumeStream(call.streamID, taken)
        scheduleFlush()
    }

    /// A paused call resumed: hands on the messages (and the end) that
    /// waited, then gives the window back.
    func resumeRequests(_ call: ServerCall) {
        guard calls[call.streamID] === call, !call.deliveringRequests else { return }  // (a running drain goes on by itself)
        drainMessages(call)
        if call.state.endIsPending { deliverEnd(call) }
        giveBackWindow(call)
    }

    func drainMessages(_ call: ServerCall) {
        call.deliveringRequests = true
        defer { call.deliveringRequests = false }
        while call.state.deliversMessages {
            let before = call.deframer.bufferedBytes
            let next: FramedMessage?
            do {
                next = try call.deframer.next()
            } catch {
                switch error {
                case .messageTooLarge(let length, let limit):
                    failRequest(call, GRPCStatus(.resourceExhausted, "request message of \(length) bytes is larger than the limit of \(limit)"))
                case .invalidCompressedFlag(let flag):
                    failRequest(call, GRPCStatus(.internalError, "invalid compressed flag \(flag)"))
                }
                return
            }
            inboundBytesBuffered(call.deframer.bufferedBytes - before)
            guard let message = next else { return }
            var payload = message.payload
            if message.compressed {
                guard call.requestEncoding == .gzip else {
                    failRequest(call, GRPCStatus(.internalError, "compressed message without a grpc-encoding"))
                    return
                }
                do {
                    payload = try MessageCompression.gunzip(payload, limit: configuration.maxReceiveMessageBytes, allocator: call.allocator)
                } catch {
                    switch error {
                    case .tooLarge(let limit):
                        failRequest(call, GRPCStatus(.resourceExhausted, "decompressed request message is larger than the limit of \(limit)"))
                    case .corrupt:
                        failRequest(call, GRPCStatus(.internalError, "corrupt gzip message"))
                    }
                    return
                }
            }
            guard call.state.handlerIsActive, let handler = call.handler else { return }
            handler.handleMessage(payload)
        }
    }

    /// Counts partly received request bytes for the connection and the server.
    func inboundBytesBuffered(_ delta: Int) {
        guard delta != 0 else { return }
        bufferedInboundBytes += delta
        configuration.requestBudget.add(delta)
        assert(bufferedInboundBytes >= 0)
    }

    func endOfRequest(streamID: Int32) {
        // A paused call hears of the end after the messages that wait (on resume).
        guard let call = calls[streamID], call.state.requestEnded() else { return }
        deliverEnd(call)
    }

    func deliverEnd(_ call: ServerCall) {
        guard call.state.endDelivered(), !call.isFinished else { return }
        if call.deframer.hasPartialMessage {
            failRequest(call, GRPCStatus(.internalError, "stream ended inside a message"))
            return
        }
        guard call.state.handlerIsActive, let handler = call.handler else { return }
        handler.handleEnd()
    }

    /// Ends a call for a reason of the transport's (deadline, bad framing,
    /// limits): the client gets `status`, the handler a cancel.
    /// The request stream broke (a message over a limit, bad compression, a
    /// stream ending inside a message, request buffer budgets): the call
    /// fails with `status`, unless its handler asked to answer such a call
    /// itself (`ServerCall.onRequestFailure`); then it gets no more messages
    /// (what the client still sends is discarded) and answers when it can.
    func failRequest(_ call: ServerCall, _ status: GRPCStatus) {
        guard !call.isFinished else { return }
        if let hook = call.requestFailureHandler {
            call.requestFailureHandler = nil
            if hook(status) {
                call.state.requestTakenOver()
                discardRequestBytes(call)
                return
            }
        }
        failCall(call, status)
    }

    func failCall(_ call: ServerCall, _ status: GRPCStatus) {
        guard !call.isFinished else { return }
        call.finish(status)
        call.notifyHandlerCancelled()
        discardRequestBytes(call)
    }

    /// Drops what the call's deframer holds and gives the stream's whole
    /// receive window back (the call takes no more messages).
    func discardRequestBytes(_ call: ServerCall) {
        inboundBytesBuffered(-call.deframer.bufferedBytes)
        call.deframer = MessageDeframer(maxMessageLength: configuration.maxReceiveMessageBytes, allocator: call.allocator)
        giveBackWindow(call)  // nothing waits in the deframer now: all of it
    }

    /// Notes a stream answered before its request was read: see `refusedStreams`.
    func refused(streamID: Int32) {
        guard let session, !session.isRemoteClosed(streamID: streamID) else { return }
        refusedStreams[streamID] = 0
    }
}
