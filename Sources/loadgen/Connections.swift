import GRPCClient

/// loadgen's connections: the shared client's h2c connection with a 16 MiB
/// connection receive window and loadgen's user-agent.
func openConnection(target: String, metadata: [(String, String)]) throws(ClientError) -> H2Connection {
    var options = H2ClientSession.Options()
    options.connectionWindowBytes = 1 << 24
    return try H2Connection(target: target, metadata: metadata, userAgent: "credits-loadgen/0.1", options: options)
}
