import Testing
@testable import GRPCTransport

/// A machine in each state, reached by the allowed transitions.
private enum At: CaseIterable {
    case active, draining, drainingFinal, closing, closed

    var machine: ConnectionStateMachine {
        var m = ConnectionStateMachine()
        switch self {
        case .active: break
        case .draining: _ = m.beginDrain()
        case .drainingFinal:
            _ = m.beginDrain()
            _ = m.sendFinalGoAway()
        case .closing: _ = m.close()
        case .closed: m.channelClosed()
        }
        return m
    }

    var state: ConnectionStateMachine.State {
        switch self {
        case .active: return .active
        case .draining: return .draining(finalGoAwaySent: false)
        case .drainingFinal: return .draining(finalGoAwaySent: true)
        case .closing: return .closing
        case .closed: return .closed
        }
    }
}

@Suite struct ConnectionStateMachineTests {
    @Test func eachStateIsReachedAndAnswersItsQuestions() {
        for at in At.allCases {
            let m = at.machine
            #expect(m.state == at.state, "\(at)")
            #expect(m.isClosing == (at == .closing || at == .closed), "\(at)")
            #expect(m.isDraining == (at == .draining || at == .drainingFinal), "\(at)")
            #expect(m.closesWhenCallsEnd == (at == .drainingFinal), "\(at)")
        }
    }

    @Test func drainBeginsOnlyFromActive() {
        for at in At.allCases {
            var m = at.machine
            let began = m.beginDrain()
            #expect(began == (at == .active), "\(at)")
            #expect(m.state == (at == .active ? .draining(finalGoAwaySent: false) : at.state), "\(at): ignored elsewhere")
        }
    }

    @Test func theFinalGoAwayFollowsOnlyTheNotice() {
        for at in At.allCases {
            var m = at.machine
            let sent = m.sendFinalGoAway()
            #expect(sent == (at == .draining), "\(at)")
            #expect(m.state == (at == .draining ? .draining(finalGoAwaySent: true) : at.state), "\(at): ignored elsewhere")
        }
    }

    @Test func closeHappensOnceFromActiveOrDraining() {
        for at in At.allCases {
            var m = at.machine
            let closes = m.close()
            let open = at == .active || at == .draining || at == .drainingFinal
            #expect(closes == open, "\(at)")
            #expect(m.state == (open ? .closing : at.state), "\(at)")
            let again = m.close()
            #expect(!again, "\(at): closed once")
        }
    }

    @Test func theChannelClosingEndsEveryState() {
        for at in At.allCases {
            var m = at.machine
            m.channelClosed()
            #expect(m.state == .closed, "\(at)")
            let began = m.beginDrain()
            let closes = m.close()
            let final = m.sendFinalGoAway()
            #expect(!began && !closes && !final, "\(at): nothing after closed")
        }
    }
}
