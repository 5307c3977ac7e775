/// Everything that can go wrong talking to the Kubernetes API server, with a message a person can act on.
public enum KubernetesError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An environment variable the in-cluster configuration needs is not set.
    case missingEnvironment(variable: String)
    /// A file (token, certificate, kubeconfig) could not be read.
    case unreadableFile(path: String, reason: String)
    /// The kubeconfig is not usable: no current context, a missing cluster or user, bad base64...
    case invalidKubeconfig(source: String, reason: String)
    /// A certificate or key could not be loaded.
    case invalidCertificate(source: String, reason: String)
    /// The server address is not an https:// (or http://) URL.
    case invalidServerURL(String)
    /// The request never got an answer: connection refused, TLS failure, reset, timeout.
    case transport(request: String, reason: String)
    /// The server answered with a status other than 2xx; `status` is the Status object it sent, if any.
    case apiStatus(request: String, code: Int, status: Status?)
    /// The server answered 409 Conflict: a write lost a race. Either the object's `metadata.resourceVersion`
    /// no longer matches (reason `Conflict`: someone else wrote it first; read it again and decide anew), or a
    /// create found the name taken (reason `AlreadyExists`). Kept apart from ``apiStatus(request:code:status:)``
    /// because optimistic concurrency makes it a normal outcome, not a failure.
    case conflict(request: String, status: Status?)
    /// A body or watch event the server sent could not be decoded.
    case decoding(request: String, reason: String)
    /// A watch event (one line of the stream) grew beyond the allowed size without ending.
    case eventTooLarge(request: String, limit: Int)
    /// A list page or other answer is larger than the allowed size (``KubernetesClient/Options/maximumBodySize``);
    /// it was given up without reading the rest.
    case responseTooLarge(request: String, limit: Int)
    /// The consumer of a watch fell more than `limit` events behind the server; the watch was given up.
    case watchBacklog(request: String, limit: Int)
    /// A watch stream reported an ERROR event with this Status.
    case watchError(request: String, status: Status)
    /// A watch stayed silent longer than allowed and was given up.
    case watchIdle(request: String, seconds: Double)
    /// A list page or other answer sent its head, then no byte of its body for this long (a half-open
    /// connection); it was given up.
    case readIdle(request: String, seconds: Double)
    /// The task was cancelled.
    case cancelled

    /// The HTTP code the server gave (a Status's `code` for a watch ERROR event), if any.
    public var statusCode: Int? {
        switch self {
        case .apiStatus(_, let code, _): code
        case .conflict: 409
        case .watchError(_, let status): status.code
        default: nil
        }
    }

    /// True for 410 Gone (Expired): the resource version asked for is too old; the caller must list again.
    public var isGone: Bool {
        statusCode == 410 || {
            if case .watchError(_, let status) = self { return status.reason == "Expired" || status.reason == "Gone" }
            return false
        }()
    }

    /// True for 401 Unauthorized.
    public var isUnauthorized: Bool { statusCode == 401 }

    /// True for 404 Not Found: the object (or the resource) does not exist.
    public var isNotFound: Bool { statusCode == 404 }

    /// True for 409 Conflict (``conflict(request:status:)``): a stale resource version or a name already taken.
    public var isConflict: Bool {
        if case .conflict = self { return true }
        return false
    }

    /// True for a create that found the name taken (409 with reason `AlreadyExists`).
    public var isAlreadyExists: Bool {
        if case .conflict(_, let status) = self { return status?.reason == "AlreadyExists" }
        return false
    }

    public var description: String {
        switch self {
        case .missingEnvironment(let variable):
            "in-cluster configuration: the environment variable \(variable) is not set (is this running in a pod?)"
        case .unreadableFile(let path, let reason):
            "cannot read \(path): \(reason)"
        case .invalidKubeconfig(let source, let reason):
            "kubeconfig \(source): \(reason)"
        case .invalidCertificate(let source, let reason):
            "certificate or key from \(source): \(reason)"
        case .invalidServerURL(let url):
            "invalid API server address \"\(url)\": expected https://HOST[:PORT]"
        case .transport(let request, let reason):
            "\(request): no answer from the API server: \(reason)"
        case .apiStatus(let request, let code, let status):
            Self.describeStatus(request: request, code: code, status: status)
        case .conflict(let request, let status):
            Self.describeStatus(request: request, code: 409, status: status)
        case .decoding(let request, let reason):
            "\(request): cannot decode the answer: \(reason)"
        case .eventTooLarge(let request, let limit):
            "\(request): a watch event is larger than \(limit) bytes"
        case .responseTooLarge(let request, let limit):
            "\(request): the answer is larger than \(limit) bytes"
        case .watchBacklog(let request, let limit):
            "\(request): more than \(limit) watch events waiting for a consumer that fell behind, giving the watch up"
        case .watchError(let request, let status):
            "\(request): watch ERROR event: \(status.code.map { "\($0) " } ?? "")\(status.reason ?? "")"
                + (status.message.map { ": \($0)" } ?? "")
        case .watchIdle(let request, let seconds):
            "\(request): watch silent for \(seconds) s, restarting it"
        case .readIdle(let request, let seconds):
            "\(request): the answer stalled: no byte for \(seconds) s, giving it up"
        case .cancelled:
            "cancelled"
        }
    }

    private static func describeStatus(request: String, code: Int, status: Status?) -> String {
        if let status, let message = status.message, !message.isEmpty {
            "\(request): HTTP \(code)\(status.reason.map { " \($0)" } ?? ""): \(message)"
        } else {
            "\(request): HTTP \(code)"
        }
    }
}
