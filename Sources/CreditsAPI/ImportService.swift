import CreditsProto
import GRPCServices
import GRPCTransport
import Ledger
import NIOCore

extension CreditServiceRoutes {
    /// ImportLots (staff): the caller is authorized when the call starts,
    /// before any record is decoded.
    var importLots: RPCRoute {
        let core = self.core
        return ProtoRoute.streaming(S.importLots, authorize: { call in core.context(call, .staff) }) { call, context in
            ImportLotsCall(core: core, call: call, tenantId: context.tenantId)
        }
    }
}

/// One ImportLots call: each record is its own ledger write (`ImportLot`,
/// idempotent by record key), submitted as it arrives; the writer groups
/// them into batches. Outcomes are counted in stream order.
///
/// Memory is bounded per call: at most `maxInFlight` records are submitted
/// and not yet answered (then the request stream is paused, and HTTP/2 flow
/// control holds the sender), and at most `maxListedFailures` failures are kept.
///
/// The service's promise holds: a status other than OK means no record was
/// applied. Once one was, or one is in flight, the call ends OK: at the end
/// of the client's stream (`complete`), or early with `complete = false`
/// when the deadline passes, the server shuts down or the ledger's queue is full;
/// then reading stops, the records in flight are waited for, and
/// `processed` counts every record handled (records from there on were not
/// taken and are not applied). Event-loop confined.
final class ImportLotsCall: ProtoRecordStreamHandler, @unchecked Sendable {
    typealias Request = Credits_V1_ImportLotRecord
    typealias Response = Credits_V1_ImportLotsResponse

    /// Records taken and not yet counted (submitted and not answered, or
    /// answered behind one that is), at most.
    static let maxInFlight = 512
    /// A paused call resumes reading once this few are left.
    static let resumeInFlight = 384
    /// Failures listed in the response (`failed` counts all). With the
    /// bounds below a failure takes at most ~2 KiB, so the response stays
    /// under 4 MiB (grpcio's default receive limit) whatever the records hold.
    static let maxListedFailures = 1_000
    static let maxViolationsPerFailure = 8
    static let maxFailureTextBytes = 256

    private enum Outcome {
        case applied(seq: Int64)
        case alreadyApplied
        case failed(RPCError)
        /// Not taken (the ledger could not queue it): neither this record nor
        /// any after it counts as processed.
        case notTaken
    }

    /// A record taken and not yet counted (counting is in stream order).
    private struct Slot {
        var recordKey: String
        var ticket: WriteTicket?
        var outcome: Outcome?
    }

    private let core: APICore
    private let call: ProtoCall<Response>
    private let tenantId: String
    private var slots = CircularBuffer<Slot>(initialCapacity: 64)
    /// The stream index of `slots.first`.
    private var firstSlotIndex: Int64 = 0
    /// The stream index of the next record to arrive.
    private var nextIndex: Int64 = 0
    private var inFlight = 0
    private var response = Response()
    /// No more records are taken (deadline, ledger shutdown or queue full).
    private var stopped = false
    /// A record was not taken: nothing from it on is counted.
    private var countingClosed = false
    private var requestEnded = false
    private var finished = false

    init(core: APICore, call: ProtoCall<Response>, tenantId: String) {
        self.core = core
        self.call = call
        self.tenantId = tenantId
        if call.deadline != nil {
            call.call.onDeadline { [self] in deadlinePassed() }
        }
        call.call.onServerShutdown { [self] in
            guard !finished else { return }
            stop()
            finishIfDone()
        }
        call.call.onRequestFailure { [self] _ in requestBroke() }
    }

    // MARK: Stream events

    func handle(_ request: Result<Request, ProtoDecodingError>) {
        // After a stop, a record that still arrives is not taken (nor counted).
        guard !stopped, !finished else { return }
        let index = nextIndex
        nextIndex += 1
        switch request {
        case .failure(let error):
            slots.append(Slot(recordKey: "", ticket: nil, outcome: .failed(ProtoRoute.undecodable(Request.self, error, noun: "record"))))
            pauseIfFull()
            countReady()
        case .success(let record):
            submit(record, index: index)
        }
    }

    func handleEnd() {
        requestEnded = true
        finishIfDone()
    }

    func handleCancel() {
        // The client went (or the transport ended the call): withdraw what
        // the writer has not taken; what it took completes unseen. Last
        // first: the writer takes from the front, so where the two meet
        // splits the stream into a prefix applied and a rest withdrawn.
        finished = true
        stopped = true
        for slot in slots.reversed() { _ = slot.ticket?.withdraw() }
        slots.removeAll()
    }

    // MARK: Records

    private func submit(_ record: Request, index: Int64) {
        var check = RequestCheck()
        let validFrom = check.optionalTime(record.validFrom, "valid_from")
        let validUntil = check.optionalTime(record.validUntil, "valid_until")
        let command = ImportLot(
            tenantId: tenantId, recordKey: record.recordKey, clientId: record.clientID, amountMinor: record.amountMinor,
            centerId: record.centerID, scope: Convert.scope(record.scope), validFromMicros: validFrom, validUntilMicros: validUntil,
            externalRef: record.externalRef, legacyOrigin: record.legacyOrigin, priceMinor: record.priceMinor, note: record.note)
        if !check.violations.isEmpty {
            slots.append(Slot(recordKey: record.recordKey, ticket: nil, outcome: .failed(check.merged(with: command))))
            pauseIfFull()
            countReady()
            return
        }
        let ticket = WriteTicket()
        slots.append(Slot(recordKey: record.recordKey, ticket: ticket, outcome: nil))
        inFlight += 1
        pauseIfFull()
        let loop = call.eventLoop
        // No write deadline: a record taken is always waited for (see deadlinePassed).
        core.ledger.submit(command, ticket: ticket) { [self] result in
            if loop.inEventLoop {
                completed(index, result)  // refused before queueing (validation, queue full, shutdown)
            } else {
                loop.execute { self.completed(index, result) }
            }
        }
    }

    private func completed(_ index: Int64, _ result: Result<WriteOutcome<ImportLotResult>, LedgerError>) {
        guard !finished else { return }
        inFlight -= 1
        let offset = Int(index - firstSlotIndex)
        precondition(offset >= 0 && offset < slots.count && slots[slots.index(slots.startIndex, offsetBy: offset)].outcome == nil,
                     "each record is answered once")
        let outcome: Outcome
        switch result {
        case .success(.applied(let output, _)): outcome = .applied(seq: output.seq)
        case .success(.replayed): outcome = .alreadyApplied
        case .failure(.unavailable), .failure(.overloaded), .failure(.withdrawn):
            // Not queued: this record and the rest of the stream are left for a re-send.
            outcome = .notTaken
            stop()
        case .failure(let error): outcome = .failed(ErrorMapping.rpcError(error))
        }
        slots[slots.index(slots.startIndex, offsetBy: offset)].outcome = outcome
        countReady()
        if !stopped && call.call.isPaused && slots.count <= Self.resumeInFlight {
            call.call.resumeRequests()  // may deliver records (and the end) right here
        }
        finishIfDone()
    }

    /// Counts the answered records at the head of the stream, in order.
    private func countReady() {
        while let first = slots.first, let outcome = first.outcome {
            slots.removeFirst()
            let index = firstSlotIndex
            firstSlotIndex += 1
            if case .notTaken = outcome { countingClosed = true }
            guard !countingClosed else { continue }
            response.processed += 1
            switch outcome {
            case .applied(let seq):
                response.applied += 1
                response.lastSeq = max(response.lastSeq, seq)
            case .alreadyApplied:
                response.alreadyApplied += 1
            case .failed(let error):
                response.failed += 1
                if response.failures.count < Self.maxListedFailures {
                    response.failures.append(Self.failure(index: index, recordKey: first.recordKey, error))
                }
            case .notTaken:
                preconditionFailure("a record not taken closes the count")
            }
        }
        finishIfDone()
    }

    /// Records taken and not yet counted (in flight, or answered behind one
    /// that is) are bounded: at the bound, stop reading until some are counted.
    private func pauseIfFull() {
        if slots.count >= Self.maxInFlight { call.call.pauseRequests() }
    }

    // MARK: Ending

    /// Takes no more records; the call ends once those in flight are answered.
    private func stop() {
        stopped = true
        call.call.pauseRequests()
    }

    /// The transport could not read the rest of the client's stream (a
    /// record over the message limit, a stream ending inside a record, …):
    /// with nothing applied and nothing in flight its status is true;
    /// otherwise the call answers what was done, complete = false.
    private func requestBroke() -> Bool {
        guard !finished else { return false }
        if response.applied == 0 && inFlight == 0 { return false }
        stopped = true  // records in flight are still counted; complete stays false
        finishIfDone()
        return true
    }

    private func deadlinePassed() -> ServerCall.DeadlineAction {
        guard !finished else { return .fail }
        // Nothing applied and nothing that could be: the plain deadline status is true.
        if response.applied == 0 && inFlight == 0 { return .fail }
        stop()
        finishIfDone()
        return .wait
    }

    private func finishIfDone() {
        guard !finished, inFlight == 0, slots.isEmpty, requestEnded || stopped else { return }
        finished = true
        // The end is delivered after every record: all of them were read
        // (a stop after it cut nothing), and taken unless one was not.
        response.complete = requestEnded && !countingClosed
        call.respond(response)
    }

    // MARK: Failures

    private static func failure(index: Int64, recordKey: String, _ error: RPCError) -> Credits_V1_ImportRecordFailure {
        var failure = Credits_V1_ImportRecordFailure()
        failure.index = index
        failure.recordKey = recordKey
        failure.reason = error.reason?.name ?? ""
        failure.message = GRPCStatus.bounded(error.message, maxBytes: maxFailureTextBytes)
        failure.fieldViolations = error.fieldViolations.prefix(maxViolationsPerFailure).map {
            var v = Credits_V1_FieldViolation()
            v.field = GRPCStatus.bounded($0.field, maxBytes: 100)
            v.description_p = GRPCStatus.bounded($0.description, maxBytes: 100)
            return v
        }
        if error.fieldViolations.count > maxViolationsPerFailure {
            var more = Credits_V1_FieldViolation()
            more.description_p = "\(error.fieldViolations.count - maxViolationsPerFailure) more invalid fields are not listed"
            failure.fieldViolations.append(more)
        }
        return failure
    }
}
