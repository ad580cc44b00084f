// swift-tools-version:6.0
// credits: the system of record for client credits, served over gRPC
// (HTTP/2 via libnghttp2, messages via protobuf-c, ledger in SQLite).
import PackageDescription

/// Release builds of our own modules: whole-package specialization of the
/// generic message and call code (measured: less generic-metadata lookup per
/// call), and no run-time exclusivity checks (debug builds, which run the
/// tests, keep them).
let releaseSpeed: [SwiftSetting] = [
    .unsafeFlags(["-cross-module-optimization", "-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "credits",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "credits", targets: ["credits"]),
        .executable(name: "creditctl", targets: ["creditctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // System-library shims: a module map and nothing else.
        .systemLibrary(name: "CNghttp2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        // protobuf-c output of tools/gen-proto; never edited by hand.
        .target(
            name: "CreditsProtoC",
            dependencies: ["CProtobufC"],
            exclude: ["descriptor_set.bin"],
            cSettings: [.headerSearchPath("include"), .unsafeFlags(["-Wno-c23-extensions"])]
        ),
        // Swift value types over the protobuf-c messages (generated) and the
        // one place that touches their C pointers (ProtoRuntime.swift).
        .target(
            name: "CreditsProto",
            dependencies: ["CreditsProtoC", "CProtobufC", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: releaseSpeed
        ),
        // gRPC over HTTP/2 on nghttp2 and SwiftNIO. Knows nothing of credits or protobuf.
        .target(
            name: "GRPCTransport",
            dependencies: [
                "CNghttp2",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            swiftSettings: releaseSpeed
        ),
        // The credits ledger: domain, commands, invariants, SQLite store and
        // the group-commit writer. Knows nothing of HTTP/2 or protobuf.
        // It reports to metrics through the swift-metrics facade only (no-op
        // objects unless the server bootstraps a metrics backend).
        .target(
            name: "Ledger",
            dependencies: ["CSQLite", .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: releaseSpeed
        ),
        // Typed protobuf handlers over the transport, error details, and the
        // standard services (health, reflection) plus the test-only service.
        .target(
            name: "GRPCServices",
            dependencies: [
                "GRPCTransport", "CreditsProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseSpeed
        ),
        // credits.v1 handlers: protobuf ⇄ ledger commands, auth, status mapping.
        .target(
            name: "CreditsAPI",
            dependencies: [
                "Ledger", "GRPCTransport", "GRPCServices", "CreditsProto",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: releaseSpeed
        ),
        // Prometheus metrics on an admin HTTP port and the access log: an
        // observer of the transport's calls; knows nothing of credits.
        .target(
            name: "Observability",
            dependencies: [
                "GRPCTransport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: releaseSpeed
        ),
        .executableTarget(
            name: "credits",
            dependencies: [
                "GRPCTransport", "GRPCServices", "CreditsAPI", "Ledger", "LedgerSeed", "Observability",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: releaseSpeed
        ),

        // The gRPC client: an nghttp2 client session driven by bytes (the
        // transport tests) or over a socket (loadgen, creditctl). Knows nothing of credits.
        .target(name: "GRPCClient", dependencies: ["CNghttp2"], swiftSettings: releaseSpeed),
        // The command-line client of the credits API (issue 15).
        .executableTarget(
            name: "creditctl",
            dependencies: [
                "GRPCClient", "CreditsProto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // The load tool (issue 5): N connections x M streams of gRPC calls on an
        // nghttp2 client session, latency histograms, summary table and JSON.
        .executableTarget(
            name: "loadgen",
            dependencies: [
                "GRPCClient", "CreditsProto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),

        // Offline bulk seeding of a tenant for scale benchmarks: the money model's plans, the store's BulkLoad.
        .target(name: "LedgerSeed", dependencies: ["Ledger"], swiftSettings: releaseSpeed),

        // Group-commit benchmark of the ledger (tools/bench/ledger-group-commit).
        .executableTarget(name: "ledgerbench", dependencies: ["Ledger"]),

        .testTarget(name: "CreditsProtoTests", dependencies: ["CreditsProto"]),
        .testTarget(name: "LedgerTests", dependencies: ["Ledger", "LedgerSeed"]),
        // The credits.v1 handlers in process: in-memory calls over a real
        // ledger in a temporary directory, no sockets.
        .testTarget(
            name: "CreditsAPITests",
            dependencies: [
                "CreditsAPI", "GRPCServices", "GRPCTransport", "CreditsProto", "Ledger",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "GRPCClientTests", dependencies: ["GRPCClient"]),
        .testTarget(name: "creditctlTests", dependencies: ["creditctl", "CreditsProto"]),
        .testTarget(
            name: "GRPCTransportTests",
            dependencies: [
                "GRPCTransport", "GRPCClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v5]
)
