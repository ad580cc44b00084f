// ledgerbench: Spend throughput of the ledger's group-commit writer with
// synchronous=FULL, at several numbers of writes in flight, beside the same
// code path forced to one commit per write (--max-write-batch 1).
// Usage: ledgerbench [--dir DIR] [--seconds S] [--in-flight 1,16,256] [--clients N]
//                    [--random-keys] [--group-only]
// --clients and --random-keys make the writes touch random index pages (as
// loadgen spend does: 1000 clients, UUID idempotency keys).
import Dispatch
import Foundation
import Ledger

struct Options {
    var dir = NSTemporaryDirectory()
    var seconds = 5.0
    var inFlight = [1, 16, 256]
    var sync = true
    var clients = 64
    var randomKeys = false
    var groupOnly = false

    init(_ args: [String]) {
        var i = 1
        while i < args.count {
            let value = i + 1 < args.count ? args[i + 1] : ""
            switch args[i] {
            case "--dir": dir = value; i += 1
            case "--seconds": seconds = Double(value) ?? seconds; i += 1
            case "--in-flight": inFlight = value.split(separator: ",").compactMap { Int($0) }; i += 1
            case "--sync-normal": sync = false
            case "--clients": clients = max(1, Int(value) ?? clients); i += 1
            case "--random-keys": randomKeys = true
            case "--group-only": groupOnly = true
            default:
                FileHandle.standardError.write(Data("unknown argument \(args[i])\n".utf8))
                exit(2)
            }
            i += 1
        }
    }
}

struct Result {
    var inFlight: Int
    var batch: Int
    var ops: Int
    var seconds: Double
    var latenciesMicros: [Int64]
    var failures: Int

    var perSecond: Double { Double(ops) / seconds }
    func percentile(_ p: Double) -> Double {
        guard !latenciesMicros.isEmpty else { return 0 }
        let sorted = latenciesMicros.sorted()
        return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
    }
}

func run(options: Options, inFlight: Int, batch: Int) throws -> Result {
    let path = (options.dir as NSString).appendingPathComponent("ledgerbench-\(UUID().uuidString).sqlite")
    defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
    var ledgerOptions = Ledger.Options()
    ledgerOptions.synchronousFull = options.sync
    ledgerOptions.maxBatchSize = batch
    ledgerOptions.maxQueueDepth = max(10_000, inFlight * 2)
    let ledger = try Ledger(path: path, options: ledgerOptions)
    defer { ledger.close() }
    _ = try ledger.write(CreateTenant(id: "bench", name: "Bench", currency: "EUR", allowDirectory: false))
    let clients = options.clients
    for c in 0..<clients {
        _ = try ledger.write(CreateCreditOrder(tenantId: "bench", clientId: "c\(c)", amountMinor: 1_000_000_000_000, priceMinor: 0,
                                               centerId: "ctr", note: "bench", validUntilMicros: nil, scope: .any, idempotencyKey: "seed-\(c)"))
    }
    let lock = NSLock()
    var completed = 0, failures = 0, issued = 0
    var latencies: [Int64] = []
    latencies.reserveCapacity(1 << 20)
    let start = DispatchTime.now().uptimeNanoseconds
    let end = start + UInt64(options.seconds * 1e9)
    let done = DispatchSemaphore(value: 0)
    var outstanding = 0

    func submitOne() {
        lock.lock()
        issued += 1
        outstanding += 1
        let n = issued
        lock.unlock()
        let t0 = DispatchTime.now().uptimeNanoseconds
        ledger.submit(SpendCredits(tenantId: "bench", clientId: "c\(n % clients)", amountMinor: 1, reason: .service, centerId: "ctr",
                                   bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: options.randomKeys ? UUID().uuidString : "spend-\(n)"),
                      encodeReply: { _ in [1, 2, 3, 4] }) { result in
            let t1 = DispatchTime.now().uptimeNanoseconds
            lock.lock()
            outstanding -= 1
            if case .success = result {
                completed += 1
                latencies.append(Int64((t1 - t0) / 1000))
            } else {
                failures += 1
            }
            let finished = t1 >= end
            let last = finished && outstanding == 0
            lock.unlock()
            if !finished { submitOne() } else if last { done.signal() }
        }
    }
    for _ in 0..<inFlight { submitOne() }
    done.wait()
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let verifyStart = DispatchTime.now().uptimeNanoseconds
    let report = try ledger.verify()
    precondition(report.ok, "\(report)")
    FileHandle.standardError.write(Data(String(format: "verify of %d entries: %.2f s\n", report.entries,
        Double(DispatchTime.now().uptimeNanoseconds - verifyStart) / 1e9).utf8))
    return Result(inFlight: inFlight, batch: batch, ops: completed, seconds: elapsed, latenciesMicros: latencies, failures: failures)
}

let options = Options(CommandLine.arguments)
var results: [Result] = []
for inFlight in options.inFlight {
    for batch in options.groupOnly ? [256] : [256, 1] {
        let r = try run(options: options, inFlight: inFlight, batch: batch)
        results.append(r)
        FileHandle.standardError.write(Data("in flight \(inFlight), batch ≤\(batch): \(Int(r.perSecond)) spends/s\n".utf8))
    }
}
print("| in flight | commits | spends/s | p50 ms | p99 ms | max ms | failed |")
print("|---:|---|---:|---:|---:|---:|---:|")
for r in results {
    let mode = r.batch == 1 ? "one per spend" : "group (batch ≤ \(r.batch))"
    print(String(format: "| %d | %@ | %.0f | %.2f | %.2f | %.2f | %d |", r.inFlight, mode, r.perSecond, r.percentile(0.5), r.percentile(0.99),
                 Double(r.latenciesMicros.max() ?? 0) / 1000, r.failures))
}
for inFlight in options.inFlight {
    guard let group = results.first(where: { $0.inFlight == inFlight && $0.batch != 1 }),
          let single = results.first(where: { $0.inFlight == inFlight && $0.batch == 1 }) else { continue }
    print(String(format: "\nin flight %d: group commit = %.1f× one commit per spend", inFlight, group.perSecond / max(single.perSecond, 1)))
}
