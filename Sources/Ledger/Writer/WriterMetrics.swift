import CoreMetrics
import Dispatch

/// What the writer reports to metrics, through the swift-metrics facade
/// only (the ledger knows no metrics backend; without one bootstrapped these
/// are no-op objects). Used on the writer thread only.
struct WriterMetrics {
    /// Tenants whose last seq is reported at most (a label value each);
    /// later tenants are not reported, and `unreportedTenants` counts them.
    static let maxTenantLabels = 1_000

    /// Commands per committed transaction (group commit), applied or refused.
    let batchCommands = CoreMetrics.Recorder(label: "credits_ledger_batch_commands", aggregate: true)
    /// Writes waiting when the writer takes a batch.
    let queueDepth = CoreMetrics.Gauge(label: "credits_ledger_write_queue_depth")
    /// The COMMIT of a batch (with synchronous=FULL, its fsync).
    let commitDuration = CoreMetrics.Timer(label: "credits_ledger_commit_duration_seconds")
    /// From a write's submit to its batch's commit (what a caller waits),
    /// for every command of a committed batch.
    let writeLatency = CoreMetrics.Timer(label: "credits_ledger_write_latency_seconds")
    /// Tenants not given a last-seq series because `maxTenantLabels` were.
    let unreportedTenants = CoreMetrics.Gauge(label: "credits_ledger_unreported_tenants")
    private var tenantSeq: [String: CoreMetrics.Gauge] = [:]
    private var unreported = Set<String>()

    /// The latest seq of each tenant a commit wrote.
    mutating func committed(tenantSeqs: [String: Int64]) {
        for (tenant, seq) in tenantSeqs {
            if let gauge = tenantSeq[tenant] {
                gauge.record(seq)
            } else if tenantSeq.count < Self.maxTenantLabels {
                let gauge = CoreMetrics.Gauge(label: "credits_ledger_last_seq", dimensions: [("tenant", tenant)])
                tenantSeq[tenant] = gauge
                gauge.record(seq)
            } else if unreported.count < 1_000_000, unreported.insert(tenant).inserted {
                unreportedTenants.record(unreported.count)
            }
        }
    }

    static func nowNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}
