import Testing
@testable import GRPCTransport

/// The response state as a comparable string (HeaderFields is not Equatable).
private func name(_ response: CallStateMachine.Response) -> String {
    switch response {
    case .idle: return "idle"
    case .streaming(let deferred): return deferred ? "streaming(deferred)" : "streaming"
    case .finishing(let trailers, let deferred): return "finishing(\(name(trailers)))" + (deferred ? "(deferred)" : "")
    case .done: return "done"
    case .cancelled: return "cancelled"
    }
}

private func name(_ fields: HeaderFields) -> String {
    switch fields {
    case .grpcOK: return "ok"
    case .grpcResponse: return "response"
    case .list(let list): return list.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
    }
}

private let status7 = HeaderFields.list([("grpc-status", "7")])

/// A machine in each response state, reached by the allowed transitions.
private enum At: CaseIterable {
    case idle, streaming, streamingDeferred, finishing, finishingDeferred, done, cancelled

    var machine: CallStateMachine {
        var m = CallStateMachine()
        switch self {
        case .idle: break
        case .streaming: _ = m.startResponse()
        case .streamingDeferred:
            _ = m.startResponse()
            _ = m.queueEmptied(wroteBytes: false)
        case .finishing:
            _ = m.startResponse()
            _ = m.finish(trailers: status7)
        case .finishingDeferred:
            _ = m.startResponse()
            _ = m.queueEmptied(wroteBytes: false)
            _ = m.finish(trailers: status7)
        case .done: _ = m.finish(trailers: status7)
        case .cancelled: _ = m.cancel()
        }
        return m
    }
}

@Suite struct CallStateMachineTests {
    @Test func aNewCallIsIdleOpenAndActive() {
        let m = CallStateMachine()
        #expect(name(m.response) == "idle")
        #expect(m.request == .open(paused: false))
        #expect(m.handler == .active)
        #expect(m.shutdown == .running)
        #expect(m.writabilityWaits.isEmpty)
        #expect(!m.isFinished && !m.isCancelled && !m.isPaused)
        #expect(m.deliversMessages && m.takesRequestBytes && !m.endIsPending)
    }

    @Test func statesReachedAsExpected() {
        let expected: [At: String] = [
            .idle: "idle", .streaming: "streaming", .streamingDeferred: "streaming(deferred)",
            .finishing: "finishing(grpc-status=7)", .finishingDeferred: "finishing(grpc-status=7)(deferred)",
            .done: "done", .cancelled: "cancelled",
        ]
        for at in At.allCases { #expect(name(at.machine.response) == expected[at], "\(at)") }
        let finished: Set<At> = [.finishing, .finishingDeferred, .done, .cancelled]
        for at in At.allCases {
            #expect(at.machine.isFinished == finished.contains(at), "\(at)")
            #expect(at.machine.isCancelled == (at == .cancelled), "\(at)")
        }
    }

    @Test func startResponseOnlyFromIdle() {
        for at in At.allCases {
            var m = at.machine
            let before = name(m.response)
            let started = m.startResponse()
            #expect(started == (at == .idle), "\(at)")
            #expect(name(m.response) == (at == .idle ? "streaming" : before), "\(at): ignored elsewhere")
        }
    }

    @Test func finishFromIdleIsTrailersOnlyAndFromStreamingQueuesTheTrailers() {
        var idle = CallStateMachine()
        var built = 0
        guard case .submitTrailersOnly = idle.finish(trailers: { built += 1; return status7 }()) else {
            Issue.record("idle → trailers-only")
            return
        }
        #expect(name(idle.response) == "done")
        #expect(built == 0, "trailers for the queue are not built for a trailers-only answer")

        var streaming = At.streamingDeferred.machine
        guard case .trailersQueued = streaming.finish(trailers: .grpcOK) else {
            Issue.record("streaming → finishing")
            return
        }
        #expect(name(streaming.response) == "finishing(ok)(deferred)", "the deferred data source stays deferred")
    }

    @Test func finishAfterTheEndIsAProgrammerError() async {
        await #expect(processExitsWith: .failure) {
            var m = CallStateMachine()
            _ = m.finish(trailers: .grpcOK)
            _ = m.finish(trailers: .grpcOK)
        }
        await #expect(processExitsWith: .failure) {
            var m = CallStateMachine()
            _ = m.cancel()
            _ = m.finish(trailers: .grpcOK)
        }
        await #expect(processExitsWith: .failure) {
            var m = CallStateMachine()
            _ = m.startResponse()
            _ = m.finish(trailers: .grpcOK)
            _ = m.finish(trailers: .grpcOK)
        }
    }

    @Test func abortFinishesAnIdleCallAndEndsAStreamingOneAtOnce() {
        var idle = CallStateMachine()
        guard case .finish = idle.abort() else {
            Issue.record("idle: a plain finish")
            return
        }
        #expect(name(idle.response) == "idle", "abort leaves an idle call to finish")
        for at in [At.streaming, .streamingDeferred] {
            var m = at.machine
            guard case .submitTrailersNow = m.abort() else {
                Issue.record("\(at): trailers now")
                continue
            }
            #expect(name(m.response) == "done")
        }
    }

    @Test func abortAfterTheEndIsAProgrammerError() async {
        await #expect(processExitsWith: .failure) {
            var m = CallStateMachine()
            _ = m.finish(trailers: .grpcOK)
            _ = m.abort()
        }
        await #expect(processExitsWith: .failure) {
            var m = CallStateMachine()
            _ = m.cancel()
            _ = m.abort()
        }
    }

    @Test func dataReadyResumesOnlyADeferredSource() {
        for at in At.allCases {
            var m = at.machine
            let before = name(m.response)
            let resume = m.dataReady()
            let deferred = at == .streamingDeferred || at == .finishingDeferred
            #expect(resume == deferred, "\(at)")
            #expect(name(m.response) == (deferred ? before.replacing("(deferred)", with: "") : before), "\(at)")
            let r1 = m.dataReady()
            #expect(!r1, "\(at): resumed once")
        }
    }

    @Test func anEmptyQueueEndsAFinishingStreamAndDefersAStreamingOne() {
        var finishing = At.finishing.machine
        guard case .endStream(let trailers) = finishing.queueEmptied(wroteBytes: true) else {
            Issue.record("finishing → done with the trailers")
            return
        }
        #expect(name(trailers) == "grpc-status=7")
        #expect(name(finishing.response) == "done")

        var deferredFinishing = At.finishingDeferred.machine
        guard case .endStream = deferredFinishing.queueEmptied(wroteBytes: false) else {
            Issue.record("finishing with nothing written still ends")
            return
        }

        var streaming = At.streaming.machine
        guard case .none = streaming.queueEmptied(wroteBytes: true) else {
            Issue.record("bytes written: asked again")
            return
        }
        #expect(name(streaming.response) == "streaming")
        guard case .deferData = streaming.queueEmptied(wroteBytes: false) else {
            Issue.record("nothing written: deferred")
            return
        }
        #expect(name(streaming.response) == "streaming(deferred)")

        for at in [At.idle, .done, .cancelled] {
            var m = at.machine
            let before = name(m.response)
            guard case .deferData = m.queueEmptied(wroteBytes: false), case .none = m.queueEmptied(wroteBytes: true) else {
                Issue.record("\(at): an empty source, nothing else")
                continue
            }
            #expect(name(m.response) == before, "\(at): unchanged")
        }
    }

    @Test func cancelTellsTheHandlerOnlyIfTheCallWasNotFinished() {
        for at in At.allCases {
            var m = at.machine
            let action = m.cancel()
            switch (at, action) {
            case (.cancelled, .none): break
            case (.idle, .cancel(true)), (.streaming, .cancel(true)), (.streamingDeferred, .cancel(true)): break
            case (.finishing, .cancel(false)), (.finishingDeferred, .cancel(false)), (.done, .cancel(false)): break
            default: Issue.record("\(at): \(action)")
            }
            #expect(m.isCancelled && m.isFinished, "\(at)")
            guard case .none = m.cancel() else {
                Issue.record("\(at): a second cancel does nothing")
                continue
            }
        }
    }

    @Test func theHandlerIsCancelledOnce() {
        var m = CallStateMachine()
        #expect(m.handlerIsActive)
        let r2 = m.cancelHandler()
        #expect(r2)
        #expect(!m.handlerIsActive)
        let r3 = m.cancelHandler()
        #expect(!r3)
        var plain = CallStateMachine.plainHTTPAnswer()
        #expect(!plain.handlerIsActive, "a plain-HTTP answer has no handler to tell")
        let r4 = plain.cancelHandler()
        #expect(!r4)
    }

    @Test func aPlainHTTPAnswerEndsWhenItsBodyIsTaken() {
        var plain = CallStateMachine.plainHTTPAnswer()
        #expect(plain.isFinished)
        #expect(!plain.takesRequestBytes && !plain.deliversMessages)
        guard case .endStream = plain.queueEmptied(wroteBytes: true) else {
            Issue.record("ends with its body")
            return
        }
        #expect(name(plain.response) == "done")
    }

    @Test func shutdownIsToldOnce() {
        var m = CallStateMachine()
        let r5 = m.serverShutdown()
        #expect(r5)
        #expect(m.shutdown == .notified)
        let r6 = m.serverShutdown()
        #expect(!r6)
    }

    @Test func pauseAndResumeInEveryRequestState() {
        var open = CallStateMachine()
        open.pauseRequests()
        #expect(open.request == .open(paused: true))
        #expect(open.isPaused && !open.deliversMessages && open.takesRequestBytes)
        open.pauseRequests()
        #expect(open.request == .open(paused: true), "pausing twice is pausing")
        let r7 = open.resumeRequests()
        #expect(r7)
        #expect(open.request == .open(paused: false))
        let r8 = open.resumeRequests()
        #expect(!r8, "resume without a pause is ignored")

        var ended = CallStateMachine()
        let r9 = ended.requestEnded()
        #expect(r9)
        ended.pauseRequests()
        #expect(ended.request == .ended(paused: true))
        #expect(!ended.endIsPending)
        let r10 = ended.resumeRequests()
        #expect(r10)
        #expect(ended.endIsPending)

        var closed = CallStateMachine()
        closed.requestTakenOver()
        closed.pauseRequests()
        #expect(closed.request == .closed(paused: true))
        #expect(closed.isPaused, "isPaused answers as the handler set it")
        let r11 = closed.resumeRequests()
        #expect(r11)
        #expect(closed.request == .closed(paused: false))
    }

    @Test func theEndIsToldOnceAndAfterAResume() {
        var m = CallStateMachine()
        let r12 = m.requestEnded()
        #expect(r12, "not paused: told now")
        #expect(m.request == .ended(paused: false))
        let r13 = m.requestEnded()
        #expect(!r13, "a second end is ignored")
        #expect(m.endIsPending)
        let r14 = m.endDelivered()
        #expect(r14)
        #expect(m.request == .closed(paused: false))
        let r15 = m.endDelivered()
        #expect(!r15, "told once")
        let r16 = m.requestEnded()
        #expect(!r16, "an end after the end was told is ignored")
        #expect(!m.deliversMessages && !m.takesRequestBytes)

        var paused = CallStateMachine()
        paused.pauseRequests()
        let r17 = paused.requestEnded()
        #expect(!r17, "paused: told on resume")
        #expect(paused.request == .ended(paused: true))
        #expect(!paused.endIsPending)

        var notEnded = CallStateMachine()
        let r18 = notEnded.endDelivered()
        #expect(!r18, "no end to tell before the client half-closed")
        #expect(notEnded.request == .open(paused: false))
    }

    @Test func aRequestTakenOverGetsNothingMore() {
        for paused in [false, true] {
            var open = CallStateMachine()
            if paused { open.pauseRequests() }
            open.requestTakenOver()
            #expect(open.request == .closed(paused: paused))
            #expect(!open.deliversMessages && !open.takesRequestBytes)
            let r19 = open.requestEnded()
            #expect(!r19, "the end after a take-over is ignored")
            let r20 = open.endDelivered()
            #expect(!r20)

            var ended = CallStateMachine()
            if paused { ended.pauseRequests() }
            _ = ended.requestEnded()
            ended.requestTakenOver()
            #expect(ended.request == .closed(paused: paused))
            let r21 = ended.endDelivered()
            #expect(!r21, "the end is not told after a take-over")
        }
    }

    @Test func aFinishedCallTakesNoRequestBytes() {
        for at in [At.finishing, .done, .cancelled] {
            let m = at.machine
            #expect(!m.takesRequestBytes && !m.deliversMessages, "\(at)")
            #expect(m.request == .open(paused: false), "the request side is unchanged by the response's end")
        }
    }

    @Test func writabilityWaitsAreIndependent() {
        var m = CallStateMachine()
        m.writabilityWaits.insert(.queue)
        m.writabilityWaits.insert(.connectionBuffer)
        m.writabilityWaits.remove(.queue)
        #expect(m.writabilityWaits == .connectionBuffer)
    }
}
