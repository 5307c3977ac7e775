import Foundation

/// Where the API server is and how to prove who we are: the in-cluster service account or a kubeconfig.
public struct KubernetesConfiguration: Sendable {
    /// `https://HOST:PORT`, no trailing slash.
    public var server: String
    /// PEM bundle of the CAs that sign the server's certificate; nil uses the system's roots.
    public var certificateAuthorityPEM: [UInt8]?
    /// Skip verifying the server's certificate. Only ever set from a kubeconfig that says so.
    public var insecureSkipTLSVerify: Bool
    /// The kubeconfig's `tls-server-name`: the name sent in TLS (SNI) and checked in the server's
    /// certificate instead of the server URL's host (the connection still goes to that host).
    public var tlsServerName: String?
    /// The bearer token, if the user has one.
    public var token: BearerToken?
    /// A client certificate and its key, PEM, if the user has one.
    public var clientCertificate: ClientCertificate?
    /// Where this configuration came from, for log lines: "in-cluster" or "kubeconfig /path (context)".
    public var origin: String

    public init(
        server: String, certificateAuthorityPEM: [UInt8]? = nil, insecureSkipTLSVerify: Bool = false,
        tlsServerName: String? = nil, token: BearerToken? = nil, clientCertificate: ClientCertificate? = nil,
        origin: String = "explicit"
    ) throws(KubernetesError) {
        var server = server
        while server.hasSuffix("/") { server.removeLast() }
        guard server.hasPrefix("https://") || server.hasPrefix("http://"), server.count > "https://".count else {
            throw .invalidServerURL(server)
        }
        self.server = server
        self.certificateAuthorityPEM = certificateAuthorityPEM
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.tlsServerName = tlsServerName
        self.token = token
        self.clientCertificate = clientCertificate
        self.origin = origin
    }

    /// A client certificate and private key, both PEM.
    public struct ClientCertificate: Sendable, Hashable {
        public var certificatePEM: [UInt8]
        public var keyPEM: [UInt8]
        public init(certificatePEM: [UInt8], keyPEM: [UInt8]) {
            self.certificatePEM = certificatePEM
            self.keyPEM = keyPEM
        }
    }

    /// The standard place of the service account's files in a pod.
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the service
    /// account's token (re-read whenever the file changes: bound tokens rotate) and its `ca.crt`.
    public static func inCluster(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        serviceAccountDirectory: String = KubernetesConfiguration.serviceAccountDirectory
    ) throws(KubernetesError) -> KubernetesConfiguration {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else {
            throw .missingEnvironment(variable: "KUBERNETES_SERVICE_HOST")
        }
        guard let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty else {
            throw .missingEnvironment(variable: "KUBERNETES_SERVICE_PORT")
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let tokenPath = serviceAccountDirectory + "/token"
        let tokenFile = BearerTokenFile(path: tokenPath)
        _ = try tokenFile.currentToken()  // fail now, with the path, when there is no token
        let caPEM = try readFile(serviceAccountDirectory + "/ca.crt")
        return try KubernetesConfiguration(
            server: "https://\(hostPart):\(port)", certificateAuthorityPEM: caPEM, token: .file(tokenFile),
            origin: "in-cluster service account")
    }
}

/// A bearer token: fixed, or read from a file that may be replaced at any time.
public enum BearerToken: Sendable {
    case fixed(String)
    case file(BearerTokenFile)

    /// The token to send now.
    public func currentToken() throws(KubernetesError) -> String {
        switch self {
        case .fixed(let token): token
        case .file(let file): try file.currentToken()
        }
    }
}

/// A token file that is re-read when it changes (inode, size or modification time), and at least once a
/// minute: the kubelet rotates bound service-account tokens by swapping the file.
public final class BearerTokenFile: @unchecked Sendable {
    public let path: String
    private let maximumAge: Duration
    private let lock = NSLock()
    // Guarded by `lock`.
    private var cached: (token: String, signature: FileSignature, readAt: ContinuousClock.Instant)?

    public init(path: String, maximumAge: Duration = .seconds(60)) {
        self.path = path
        self.maximumAge = maximumAge
    }

    private struct FileSignature: Equatable {
        var inode: UInt64
        var size: Int64
        var modified: Double
    }

    private func signature() -> FileSignature? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
        let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        return FileSignature(inode: inode, size: size, modified: modified)
    }

    /// The token now in the file (whitespace trimmed).
    public func currentToken() throws(KubernetesError) -> String {
        lock.lock()
        defer { lock.unlock() }
        let now = ContinuousClock.now
        let signature = signature()
        if let cached, let signature, cached.signature == signature, now - cached.readAt < maximumAge {
            return cached.token
        }
        let bytes = try readFile(path)
        let token = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw .unreadableFile(path: path, reason: "the token file is empty") }
        if let signature { cached = (token, signature, now) } else { cached = nil }
        return token
    }
}

/// Reads a whole file, as a typed error naming the path when it fails.
func readFile(_ path: String) throws(KubernetesError) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        let reason = FileManager.default.fileExists(atPath: path) ? "permission denied or not a file" : "no such file"
        throw .unreadableFile(path: path, reason: reason)
    }
    return [UInt8](data)
}
