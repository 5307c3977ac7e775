/// The fields of ObjectMeta that the agent reads; every other field is ignored.
public struct ObjectMeta: Codable, Sendable, Hashable {
    public var name: String?
    public var namespace: String?
    public var uid: String?
    public var resourceVersion: String?
    public var labels: [String: String]?
    public var annotations: [String: String]?
    /// Bumped by the server on each change of the spec (custom resources and most built-in kinds).
    public var generation: Int64?
    /// RFC 3339, as the server wrote it.
    public var creationTimestamp: String?

    public init(
        name: String? = nil, namespace: String? = nil, uid: String? = nil, resourceVersion: String? = nil,
        labels: [String: String]? = nil, annotations: [String: String]? = nil, generation: Int64? = nil,
        creationTimestamp: String? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.labels = labels
        self.annotations = annotations
        self.generation = generation
        self.creationTimestamp = creationTimestamp
    }
}

/// ListMeta: where a list stands and how to get its next page.
public struct ListMeta: Codable, Sendable, Hashable {
    public var resourceVersion: String?
    /// Present when more pages follow; pass it back as `continue`.
    public var `continue`: String?
    public init(resourceVersion: String? = nil, continue: String? = nil) {
        self.resourceVersion = resourceVersion
        self.continue = `continue`
    }
}

/// meta/v1 Status: what the API server returns for a failure, and the object of a watch ERROR event.
public struct Status: Codable, Sendable, Hashable {
    public var status: String?
    public var message: String?
    public var reason: String?
    public var code: Int?

    public init(status: String? = "Failure", message: String? = nil, reason: String? = nil, code: Int? = nil) {
        self.status = status
        self.message = message
        self.reason = reason
        self.code = code
    }
}

/// An object the informer can keep: it has metadata with a name (and a namespace when namespaced).
public protocol KubernetesObject: Decodable, Sendable {
    var metadata: ObjectMeta { get }
}

/// Identifies an object in a cache: `namespace/name`, or `name` for cluster-scoped objects.
public struct ObjectKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String

    public init(namespace: String?, name: String) {
        self.namespace = namespace ?? ""
        self.name = name
    }

    /// `namespace/name`, or `name` when cluster-scoped.
    public var description: String { namespace.isEmpty ? name : "\(namespace)/\(name)" }

    public static func < (l: ObjectKey, r: ObjectKey) -> Bool { (l.namespace, l.name) < (r.namespace, r.name) }
}

extension KubernetesObject {
    /// The object's cache key.
    public var key: ObjectKey { ObjectKey(namespace: metadata.namespace, name: metadata.name ?? "") }
}

/// One page of a list: `{"kind": "ServiceList", "metadata": {...}, "items": [...]}`.
public struct ObjectList<Object: Decodable & Sendable>: Decodable, Sendable {
    public var metadata: ListMeta
    public var items: [Object]

    enum CodingKeys: String, CodingKey { case metadata, items }

    public init(metadata: ListMeta, items: [Object]) {
        self.metadata = metadata
        self.items = items
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        metadata = try container.decodeIfPresent(ListMeta.self, forKey: .metadata) ?? ListMeta()
        // The API server sends `"items": null` for an empty list in some versions.
        items = try container.decodeIfPresent([Object].self, forKey: .items) ?? []
    }
}

/// One event of a watch stream.
public enum WatchEvent<Object: Decodable & Sendable>: Sendable, Decodable {
    case added(Object)
    case modified(Object)
    case deleted(Object)
    /// Nothing changed; the stream has seen everything up to this resource version.
    case bookmark(resourceVersion: String)
    /// The server ends the watch with this Status (410 Expired: list again).
    case error(Status)

    enum CodingKeys: String, CodingKey { case type, object }

    private struct BookmarkObject: Decodable {
        struct Metadata: Decodable { var resourceVersion: String? }
        var metadata: Metadata?
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(String.self, forKey: .type)
        switch type {
        case "ADDED": self = .added(try container.decode(Object.self, forKey: .object))
        case "MODIFIED": self = .modified(try container.decode(Object.self, forKey: .object))
        case "DELETED": self = .deleted(try container.decode(Object.self, forKey: .object))
        case "BOOKMARK":
            let object = try container.decode(BookmarkObject.self, forKey: .object)
            self = .bookmark(resourceVersion: object.metadata?.resourceVersion ?? "")
        case "ERROR": self = .error(try container.decode(Status.self, forKey: .object))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: container, debugDescription: "unknown watch event type \"\(type)\"")
        }
    }
}

/// Where a kind of object lives in the API: `/api/v1` + `services`, `/apis/discovery.k8s.io/v1` + `endpointslices`.
public struct ResourceDescriptor: Hashable, Sendable, CustomStringConvertible {
    /// `/api/v1` for the core group, `/apis/GROUP/VERSION` otherwise.
    public var groupVersionPath: String
    /// The resource's plural name.
    public var plural: String
    public var namespaced: Bool

    public init(groupVersionPath: String, plural: String, namespaced: Bool) {
        self.groupVersionPath = groupVersionPath
        self.plural = plural
        self.namespaced = namespaced
    }

    /// The collection's path, across all namespaces when `namespace` is nil.
    public func path(namespace: String? = nil) -> String {
        if namespaced, let namespace { return "\(groupVersionPath)/namespaces/\(namespace)/\(plural)" }
        return "\(groupVersionPath)/\(plural)"
    }

    public var description: String { path() }

    public static let services = ResourceDescriptor(groupVersionPath: "/api/v1", plural: "services", namespaced: true)
    public static let endpoints = ResourceDescriptor(groupVersionPath: "/api/v1", plural: "endpoints", namespaced: true)
    public static let nodes = ResourceDescriptor(groupVersionPath: "/api/v1", plural: "nodes", namespaced: false)
    public static let events = ResourceDescriptor(groupVersionPath: "/api/v1", plural: "events", namespaced: true)
    public static let endpointSlices = ResourceDescriptor(
        groupVersionPath: "/apis/discovery.k8s.io/v1", plural: "endpointslices", namespaced: true)
}

/// Label and field selectors for list and watch.
public struct Selectors: Hashable, Sendable {
    /// `key=value,other!=x,present,!absent`.
    public var labelSelector: String?
    /// `metadata.name=NODE`.
    public var fieldSelector: String?
    public init(labelSelector: String? = nil, fieldSelector: String? = nil) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
    }
}

/// meta/v1 APIGroup, as `/apis/GROUP` answers: the versions served.
public struct APIGroup: Decodable, Sendable, Hashable {
    public struct Version: Decodable, Sendable, Hashable {
        public var groupVersion: String
        public var version: String
    }
    public var name: String
    public var versions: [Version]
    public var preferredVersion: Version?
}

/// meta/v1 APIResourceList, as `/apis/GROUP/VERSION` answers: the resources of that version.
public struct APIResourceList: Decodable, Sendable, Hashable {
    public struct Resource: Decodable, Sendable, Hashable {
        /// The plural, or `plural/subresource`.
        public var name: String
        public var namespaced: Bool?
        public var kind: String?
    }
    public var groupVersion: String?
    public var resources: [Resource]
}
