import NIOConcurrencyHelpers
import NIOCore
import Testing
@testable import GRPCTransport

/// Records what the transport reports.
final class RecordingObserver: GRPCCallObserver, @unchecked Sendable {
    let log = NIOLockedValueBox<[String]>([])
    let ended = NIOLockedValueBox<[EndedCall]>([])

    func connectionOpened(peer: String) -> GRPCConnectionObserver {
        log.withLockedValue { $0.append("open \(peer)") }
        return RecordingConnectionObserver(parent: self)
    }
}

final class RecordingConnectionObserver: GRPCConnectionObserver {
    let parent: RecordingObserver
    init(parent: RecordingObserver) { self.parent = parent }
    var wantsAttributes: Bool { true }
    func callStarted() { parent.log.withLockedValue { $0.append("start") } }
    func callEnded(_ call: EndedCall) {
        parent.log.withLockedValue { $0.append("end \(call.code)") }
        parent.ended.withLockedValue { $0.append(call) }
    }
    func connectionClosed() { parent.log.withLockedValue { $0.append("close") } }
}

/// A made id: 16 hex digits, a dash, the stream id in hex.
private func isGenerated(_ id: String?) -> Bool {
    guard let id else { return false }
    let parts = id.split(separator: "-", omittingEmptySubsequences: false)
    let hex = Set("0123456789abcdef")
    return parts.count == 2 && parts[0].count == 16 && !parts[1].isEmpty && parts.allSatisfy { $0.allSatisfy(hex.contains) }
}

@Suite struct RequestIDTests {
    @Test func validIDIsEchoedOnTheStaticHeaderPath() throws {
        let h = try Harness()
        // Stream sends no headers of its own: the static response-header block.
        let r = h.call("/test.Svc/Stream", [[2]], headers: [("x-request-id", "abc-123_~!")])
        #expect(r.header(":status") == "200")
        #expect(r.header("grpc-accept-encoding") == "identity,gzip")
        #expect(r.header("x-request-id") == "abc-123_~!")
        #expect(r.messages == [[0], [1]])
    }

    @Test func invalidIDsAreReplaced() throws {
        let h = try Harness()
        var seen = Set<String>()
        for bad in ["has space", String(repeating: "x", count: 129), "tab\tinside"] {
            let r = h.call("/test.Svc/Echo", [[1]], headers: [("x-request-id", bad)])
            let id = try #require(r.header("x-request-id"))
            #expect(isGenerated(id), "\(id)")
            seen.insert(id)
        }
        #expect(seen.count == 3)
        let longest = String(repeating: "y", count: 128)
        #expect(h.call("/test.Svc/Echo", [[1]], headers: [("x-request-id", longest)]).header("x-request-id") == longest)
    }

    @Test func idsAreEchoedOnErrorsAndTrailersOnlyAnswers() throws {
        let h = try Harness()
        let fail = h.call("/test.Svc/Fail", [[1]], headers: [("x-request-id", "f-1")])
        #expect(fail.grpcStatus == 9 && fail.header("x-request-id") == "f-1")
        let unknown = h.call("/test.Svc/Nope", [[1]], headers: [("x-request-id", "u-1")])
        #expect(unknown.grpcStatus == 12 && unknown.header("x-request-id") == "u-1")
        let generatedOne = h.call("/test.Svc/Nope", [[1]])
        #expect(isGenerated(generatedOne.header("x-request-id")))
        let tooBig = h.call("/test.Svc/Echo", [Array(repeating: 0, count: 2048)], headers: [("x-request-id", "big-1")])
        #expect(tooBig.grpcStatus == 8 && tooBig.header("x-request-id") == "big-1")
    }

    @Test func theIDIsNotPassedOnAsMetadata() throws {
        let h = try Harness()
        let r = h.call("/test.Svc/Echo", [[1]], headers: [("x-request-id", "m-1"), ("x-echo", "e")])
        #expect(r.header("x-echo") == "e")
        #expect(r.headers.filter { $0.0 == "x-request-id" }.count == 1)
    }
}

@Suite struct CallObserverTests {
    @Test func everyCallIsReportedOnceWithItsStatusIDAndAttributes() throws {
        let observer = RecordingObserver()
        let h = try Harness(observer: observer)
        _ = h.call("/test.Svc/Echo", [[1]], headers: [("x-request-id", "e-1")])
        _ = h.call("/test.Svc/Annotated", [[1]], headers: [("x-request-id", "a-1")])
        _ = h.call("/test.Svc/Missing", [[1]], headers: [("x-request-id", "m-1")])
        let ended = observer.ended.withLockedValue { $0 }
        #expect(ended.map(\.code) == [.ok, .failedPrecondition, .unimplemented])
        #expect(ended.map(\.requestID) == ["e-1", "a-1", "m-1"])
        #expect(ended.map(\.path) == ["/test.Svc/Echo", "/test.Svc/Annotated", "/test.Svc/Missing"])
        #expect(ended.map(\.isRoutedMethod) == [true, true, false])
        #expect(ended[1].attributes.map { "\($0.key)=\($0.value)" } == ["tenant=t1", "reason=NO_LUCK"])
        #expect(ended[0].attributes.isEmpty)
        #expect(ended.allSatisfy { !$0.peer.isEmpty && $0.peer == ended[0].peer && $0.durationNanos < 60_000_000_000 })
        try h.channel.close().wait()
        #expect(observer.log.withLockedValue { Array($0.dropFirst()) } ==
                ["start", "end OK", "start", "end FAILED_PRECONDITION", "start", "end UNIMPLEMENTED", "close"])
        #expect(observer.log.withLockedValue { $0.first?.hasPrefix("open ") } == true)
    }

    @Test func aCallOpenWhenTheConnectionGoesIsReportedCancelled() throws {
        let observer = RecordingObserver()
        let h = try Harness(observer: observer)
        _ = h.call("/test.Svc/Never", [[1]])
        #expect(observer.ended.withLockedValue { $0.isEmpty })
        try h.channel.close().wait()
        #expect(observer.ended.withLockedValue { $0.map(\.code) } == [.cancelled])
    }
}
