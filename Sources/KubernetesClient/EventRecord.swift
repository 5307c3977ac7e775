import Foundation

/// A reference to an object, as an Event's `involvedObject`.
public struct ObjectReference: Codable, Sendable, Hashable {
    public var apiVersion: String?
    public var kind: String?
    public var namespace: String?
    public var name: String?
    public var uid: String?
    public var resourceVersion: String?
    public var fieldPath: String?

    public init(
        apiVersion: String? = "v1", kind: String, namespace: String?, name: String, uid: String? = nil,
        resourceVersion: String? = nil, fieldPath: String? = nil
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.fieldPath = fieldPath
    }
}

/// A core/v1 Event, as `kubectl describe` shows it under the object.
public struct EventRecord: Encodable, Sendable, Hashable {
    /// "Normal" or "Warning".
    public enum EventType: String, Codable, Sendable { case normal = "Normal", warning = "Warning" }

    public var name: String
    public var involvedObject: ObjectReference
    /// A CamelCase word: "InvalidCanaryWeight".
    public var reason: String
    public var message: String
    public var type: EventType
    /// Who reports: "canary-agent".
    public var component: String
    /// Which instance: the node's name.
    public var host: String?
    public var time: Date

    /// `name` defaults to the object's name and a unique hexadecimal time, as Kubernetes' recorders do;
    /// give a stable one to have the server refuse (409) a second copy of the same Event.
    public init(
        involvedObject: ObjectReference, reason: String, message: String, type: EventType = .warning,
        component: String, host: String?, time: Date = Date(), name: String? = nil
    ) {
        self.involvedObject = involvedObject
        self.reason = reason
        self.message = message
        self.type = type
        self.component = component
        self.host = host
        self.time = time
        let nanoseconds = UInt64(max(0, time.timeIntervalSince1970) * 1e9)
        self.name = name ?? "\(involvedObject.name ?? "object").\(String(nanoseconds, radix: 16))"
    }

    enum CodingKeys: String, CodingKey {
        case apiVersion, kind, metadata, involvedObject, reason, message, type, source, firstTimestamp,
            lastTimestamp, count, reportingComponent, reportingInstance
    }

    struct Metadata: Encodable {
        var name: String
        var namespace: String
    }

    struct Source: Encodable {
        var component: String
        var host: String?
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        let timestamp = time.formatted(.iso8601)
        try container.encode("v1", forKey: .apiVersion)
        try container.encode("Event", forKey: .kind)
        try container.encode(Metadata(name: name, namespace: involvedObject.namespace ?? "default"), forKey: .metadata)
        try container.encode(involvedObject, forKey: .involvedObject)
        try container.encode(reason, forKey: .reason)
        try container.encode(message, forKey: .message)
        try container.encode(type, forKey: .type)
        try container.encode(Source(component: component, host: host), forKey: .source)
        try container.encode(timestamp, forKey: .firstTimestamp)
        try container.encode(timestamp, forKey: .lastTimestamp)
        try container.encode(1, forKey: .count)
        try container.encode(component, forKey: .reportingComponent)
        try container.encode(host ?? "", forKey: .reportingInstance)
    }
}
