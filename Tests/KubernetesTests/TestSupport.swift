import Foundation
import KubernetesClient
import Testing

struct TimedOut: Error, CustomStringConvertible {
    var description: String
}

/// Polls `probe` until it gives a value (every few milliseconds, up to `timeout`).
func eventually<T>(
    _ what: String, timeout: Duration = .seconds(15), _ probe: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await probe() { return value }
        if ContinuousClock.now > deadline { throw TimedOut(description: "timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// Collects what a stream or callback produces, for tests to look at.
actor Recorder<Value: Sendable> {
    private(set) var values: [Value] = []
    func append(_ value: Value) { values.append(value) }
    var last: Value? { values.last }
    var count: Int { values.count }

    /// The first value after index `after` that matches.
    func first(after index: Int = 0, where predicate: @Sendable (Value) -> Bool) -> Value? {
        values.dropFirst(index).first(where: predicate)
    }
}

/// Informer options that make tests quick: tiny backoff, small pages.
func fastInformerOptions(pageSize: Int? = 2) -> InformerOptions {
    var options = InformerOptions()
    options.pageSize = pageSize
    options.backoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(80), multiplier: 2, jitter: 0.5)
    options.watchTimeout = .seconds(120)
    options.minimumWatchDuration = .milliseconds(20)
    return options
}

/// A temporary folder, removed afterwards.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = NSTemporaryDirectory() + "canary-agent-kube-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// Writes a file the way the kubelet rotates projected tokens: a new file renamed over the old one.
func replaceFile(_ path: String, with text: String) throws {
    let temporary = path + ".tmp-\(UUID().uuidString)"
    try text.write(toFile: temporary, atomically: false, encoding: .utf8)
    _ = rename(temporary, path)
}

/// Starts a stand-in API server, runs `body`, stops it.
func withAPIServer<T>(
    requireClientCertificate: Bool = false, namedCertificate: Bool = false, _ body: (FakeAPIServer, TestCertificates) async throws -> T
) async throws -> T {
    let certificates = try TestCertificates.shared()
    let server = try await FakeAPIServer.start(
        certificates: certificates, requireClientCertificate: requireClientCertificate, namedCertificate: namedCertificate)
    do {
        let result = try await body(server, certificates)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

/// A client for `configuration`, shut down after `body`.
func withClient<T>(
    _ configuration: KubernetesConfiguration, connectTimeout: Duration = .seconds(5), _ body: (KubernetesClient) async throws -> T
) async throws -> T {
    var options = KubernetesClient.Options()
    options.connectTimeout = connectTimeout
    options.requestTimeout = .seconds(10)
    let client = try KubernetesClient(configuration: configuration, options: options)
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

/// A configuration for the stand-in server, trusting its CA, with a fixed token.
func serverConfiguration(_ server: FakeAPIServer, _ certificates: TestCertificates, token: String? = "token-1") throws -> KubernetesConfiguration {
    let ca = try [UInt8](Data(contentsOf: URL(fileURLWithPath: certificates.caCertificate)))
    return try KubernetesConfiguration(server: server.url, certificateAuthorityPEM: ca, token: token.map { .fixed($0) })
}

/// Runs `body` while `operation` runs in a task, then cancels the task and waits for it.
func whileRunning<T>(_ operation: @escaping @Sendable () async -> Void, _ body: () async throws -> T) async throws -> T {
    let task = Task { await operation() }
    do {
        let result = try await body()
        task.cancel()
        await task.value
        return result
    } catch {
        task.cancel()
        await task.value
        throw error
    }
}
