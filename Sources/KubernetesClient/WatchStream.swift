import AsyncHTTPClient
import Foundation
import NIOCore

/// The events of one watch, decoded from the newline-delimited JSON body as it streams in.
/// Iterating ends when the server closes the watch; it throws a ``KubernetesError`` when the connection
/// drops, an event is malformed or too large, or the watch is silent for longer than its idle timeout.
/// Dropping the iterator (or cancelling the task) closes the connection.
///
/// Memory is bounded twice: one event is at most `maximumEventSize` bytes, and at most
/// `maximumBufferedEvents` decoded events wait between the body reader and the consumer. When the
/// consumer falls further behind, the watch fails with ``KubernetesError/watchBacklog(request:limit:)``
/// rather than silently blocking: the informer then re-lists (its backoff applies), which is how
/// Kubernetes clients recover from a watch they could not keep up with, and a stuck consumer shows up
/// as a logged error rather than as a growing RSS or a stalled connection the server eventually kills.
/// Events are never dropped: a dropped event would leave the cache wrong without anyone knowing.
public struct WatchStream<Object: Decodable & Sendable>: AsyncSequence, Sendable {
    public typealias Element = WatchEvent<Object>
    private let stream: AsyncThrowingStream<WatchEvent<Object>, any Error>
    public let request: String

    init(
        body: HTTPClientResponse.Body, request: String, maximumEventSize: Int, maximumBufferedEvents: Int = 256,
        idleTimeout: Duration?
    ) {
        self.request = request
        let backlog = Swift.max(1, maximumBufferedEvents)
        let (stream, continuation) = AsyncThrowingStream<WatchEvent<Object>, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(backlog))
        self.stream = stream
        let reader = Task {
            do {
                try await Self.pump(
                    body: body, into: continuation, request: request, maximumEventSize: maximumEventSize,
                    maximumBufferedEvents: backlog, idleTimeout: idleTimeout)
                continuation.finish()
            } catch {
                continuation.finish(throwing: KubernetesClient.transportError(error, request: request))
            }
        }
        continuation.onTermination = { _ in reader.cancel() }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<WatchEvent<Object>, any Error>.AsyncIterator
        let request: String

        public mutating func next() async throws(KubernetesError) -> WatchEvent<Object>? {
            do {
                return try await base.next()
            } catch {
                throw KubernetesClient.transportError(error, request: request)
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), request: request)
    }

    private static func pump(
        body: HTTPClientResponse.Body, into continuation: AsyncThrowingStream<WatchEvent<Object>, any Error>.Continuation,
        request: String, maximumEventSize: Int, maximumBufferedEvents: Int, idleTimeout: Duration?
    ) async throws {
        let activity = ActivityClock()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let decoder = JSONDecoder()
                var framer = NewlineDelimitedFramer(maximumLineLength: maximumEventSize)
                func emit(_ line: [UInt8]) throws {
                    let event: WatchEvent<Object>
                    do {
                        event = try decoder.decode(WatchEvent<Object>.self, from: Data(line))
                    } catch {
                        throw KubernetesError.decoding(request: request, reason: KubernetesClient.describe(error))
                    }
                    if case .dropped = continuation.yield(event) {
                        throw KubernetesError.watchBacklog(request: request, limit: maximumBufferedEvents)
                    }
                }
                for try await chunk in body {
                    activity.touch()
                    let lines: [[UInt8]]
                    do throws(NewlineDelimitedFramer.LineTooLong) {
                        lines = try framer.append(chunk.readableBytesView)
                    } catch {
                        throw KubernetesError.eventTooLarge(request: request, limit: error.limit)
                    }
                    for line in lines { try emit(line) }
                }
                if let last = framer.finish() { try emit(last) }
            }
            if let idleTimeout {
                group.addTask {
                    while true {
                        try await Task.sleep(until: activity.last + idleTimeout, clock: .continuous)
                        if ContinuousClock.now - activity.last >= idleTimeout {
                            let (seconds, attoseconds) = idleTimeout.components
                            throw KubernetesError.watchIdle(
                                request: request, seconds: Double(seconds) + Double(attoseconds) / 1e18)
                        }
                    }
                }
            }
            // The first child to finish decides: the body's end, or an error (the group then cancels the rest).
            try await group.next()
            group.cancelAll()
        }
    }
}

/// When bytes last arrived on a watch.
final class ActivityClock: @unchecked Sendable {
    private let lock = NSLock()
    private var lastActivity = ContinuousClock.now

    func touch() {
        lock.lock()
        lastActivity = .now
        lock.unlock()
    }

    var last: ContinuousClock.Instant {
        lock.lock()
        defer { lock.unlock() }
        return lastActivity
    }
}
