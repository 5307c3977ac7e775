import Foundation

#if canImport(Yams)
import Yams
#endif

/// The parts of a kubeconfig file the agent uses (`kubectl config view` shape).
struct Kubeconfig: Decodable {
    struct NamedCluster: Decodable {
        var name: String
        var cluster: Cluster
    }
    struct Cluster: Decodable {
        var server: String?
        var certificateAuthority: String?
        var certificateAuthorityData: String?
        var insecureSkipTLSVerify: Bool?
        var tlsServerName: String?
        enum CodingKeys: String, CodingKey {
            case server
            case certificateAuthority = "certificate-authority"
            case certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
            case tlsServerName = "tls-server-name"
        }
    }
    struct NamedContext: Decodable {
        var name: String
        var context: Context
    }
    struct Context: Decodable {
        var cluster: String
        var user: String?
    }
    struct NamedUser: Decodable {
        var name: String
        var user: User
    }
    struct User: Decodable {
        var token: String?
        var tokenFile: String?
        var clientCertificate: String?
        var clientCertificateData: String?
        var clientKey: String?
        var clientKeyData: String?
        var exec: ExecPresence?
        var authProvider: ExecPresence?
        enum CodingKeys: String, CodingKey {
            case token, tokenFile, exec
            case clientCertificate = "client-certificate"
            case clientCertificateData = "client-certificate-data"
            case clientKey = "client-key"
            case clientKeyData = "client-key-data"
            case authProvider = "auth-provider"
        }
    }
    /// Only whether an exec or auth-provider plugin is configured matters: they are not supported.
    struct ExecPresence: Decodable {
        init(from decoder: any Decoder) throws {}
    }

    var currentContext: String?
    var clusters: [NamedCluster]?
    var contexts: [NamedContext]?
    var users: [NamedUser]?

    enum CodingKeys: String, CodingKey {
        case currentContext = "current-context"
        case clusters, contexts, users
    }
}

extension KubernetesConfiguration {
    /// Whether kubeconfig files may be YAML (they may always be JSON).
    public static var readsYAMLKubeconfig: Bool {
        #if canImport(Yams)
        true
        #else
        false
        #endif
    }

    /// Reads a kubeconfig file and uses its current context (or `context`): the cluster's server and CA
    /// (data or file), `insecure-skip-tls-verify` only where the file sets it, the user's bearer token
    /// (`token` or `tokenFile`, re-read when it changes) and client certificate and key (data or files).
    /// Relative file paths are taken from the kubeconfig's folder, as kubectl does.
    public static func kubeconfig(path: String, context: String? = nil) throws(KubernetesError) -> KubernetesConfiguration {
        let bytes = try readFile(path)
        let directory = (path as NSString).deletingLastPathComponent
        return try kubeconfig(
            text: String(decoding: bytes, as: UTF8.self), source: path, directory: directory, context: context)
    }

    /// Parses kubeconfig text (YAML, or JSON); `directory` anchors relative file paths.
    public static func kubeconfig(
        text: String, source: String = "kubeconfig", directory: String = ".", context requestedContext: String? = nil
    ) throws(KubernetesError) -> KubernetesConfiguration {
        let config: Kubeconfig
        do {
            config = try decodeKubeconfig(text)
        } catch let error as KubernetesError {
            throw error
        } catch {
            throw .invalidKubeconfig(source: source, reason: "cannot parse: \(error)")
        }
        guard let contextName = requestedContext ?? config.currentContext, !contextName.isEmpty else {
            throw .invalidKubeconfig(source: source, reason: "no current-context is set")
        }
        guard let context = config.contexts?.first(where: { $0.name == contextName })?.context else {
            throw .invalidKubeconfig(source: source, reason: "context \"\(contextName)\" is not defined")
        }
        guard let cluster = config.clusters?.first(where: { $0.name == context.cluster })?.cluster else {
            throw .invalidKubeconfig(
                source: source, reason: "cluster \"\(context.cluster)\" of context \"\(contextName)\" is not defined")
        }
        guard let server = cluster.server, !server.isEmpty else {
            throw .invalidKubeconfig(source: source, reason: "cluster \"\(context.cluster)\" has no server")
        }
        var user: Kubeconfig.User?
        if let userName = context.user, !userName.isEmpty {
            guard let found = config.users?.first(where: { $0.name == userName })?.user else {
                throw .invalidKubeconfig(
                    source: source, reason: "user \"\(userName)\" of context \"\(contextName)\" is not defined")
            }
            user = found
        }

        func resolve(_ file: String) -> String {
            file.hasPrefix("/") ? file : (directory as NSString).appendingPathComponent(file)
        }
        func material(data: String?, file: String?, field: String) throws(KubernetesError) -> [UInt8]? {
            if let data, !data.isEmpty {
                let compact = data.filter { !$0.isWhitespace }
                guard let decoded = Data(base64Encoded: compact) else {
                    throw .invalidKubeconfig(source: source, reason: "\(field)-data is not valid base64")
                }
                return [UInt8](decoded)
            }
            if let file, !file.isEmpty { return try readFile(resolve(file)) }
            return nil
        }

        let caPEM = try material(
            data: cluster.certificateAuthorityData, file: cluster.certificateAuthority, field: "certificate-authority")
        var token: BearerToken?
        var clientCertificate: ClientCertificate?
        if let user {
            if let value = user.token, !value.isEmpty {
                token = .fixed(value)
            } else if let file = user.tokenFile, !file.isEmpty {
                token = .file(BearerTokenFile(path: resolve(file)))
            }
            let certificate = try material(
                data: user.clientCertificateData, file: user.clientCertificate, field: "client-certificate")
            let key = try material(data: user.clientKeyData, file: user.clientKey, field: "client-key")
            switch (certificate, key) {
            case (let certificate?, let key?):
                clientCertificate = ClientCertificate(certificatePEM: certificate, keyPEM: key)
            case (.some, nil):
                throw .invalidKubeconfig(source: source, reason: "user \"\(context.user ?? "")\" has a client certificate but no client key")
            case (nil, .some):
                throw .invalidKubeconfig(source: source, reason: "user \"\(context.user ?? "")\" has a client key but no client certificate")
            case (nil, nil):
                break
            }
            if token == nil, clientCertificate == nil, user.exec != nil || user.authProvider != nil {
                throw .invalidKubeconfig(
                    source: source,
                    reason: "user \"\(context.user ?? "")\" authenticates with an exec or auth-provider plugin, which canary-agent does not run; use a token or a client certificate")
            }
        }
        return try KubernetesConfiguration(
            server: server, certificateAuthorityPEM: caPEM, insecureSkipTLSVerify: cluster.insecureSkipTLSVerify ?? false,
            tlsServerName: cluster.tlsServerName, token: token, clientCertificate: clientCertificate,
            origin: "kubeconfig \(source) (context \(contextName))")
    }

    private static func decodeKubeconfig(_ text: String) throws -> Kubeconfig {
        let trimmed = text.drop { $0.isWhitespace }
        if trimmed.first == "{" {
            return try JSONDecoder().decode(Kubeconfig.self, from: Data(text.utf8))
        }
        #if canImport(Yams)
        return try YAMLDecoder().decode(Kubeconfig.self, from: text)
        #else
        throw KubernetesError.invalidKubeconfig(
            source: "kubeconfig", reason: "this build reads kubeconfig files in JSON form only (no YAML decoder)")
        #endif
    }
}
