import CanaryCore
import Foundation
import Logging
import UnixSignals

/// The desired state from a static YAML file (`canary-agent run --config FILE`), for hosts outside
/// a cluster.
///
/// The file is read at start, again whenever it changes (its modification time, size or inode: an
/// editor's rename and a ConfigMap's symlink swap count), checked every `pollInterval`, and on
/// SIGHUP. A file with an error is rejected whole: one `.rejected` event with the file, line and
/// field, and the running table stays as it is.
public struct StaticFileSource: DesiredStateSource {
    public let path: String
    public let pollInterval: Duration
    public let logger: Logger

    public init(path: String, pollInterval: Duration = .seconds(1), logger: Logger) {
        self.path = path
        self.pollInterval = pollInterval
        self.logger = logger
    }

    public var summary: String { "file \(path)" }

    /// Reads and checks the file once.
    public static func load(path: String) -> SourceEvent {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            return .rejected(.inFile(path, line: nil, field: "", message: "cannot be read: \(error.localizedDescription)"))
        }
        do {
            let configuration = try StaticConfiguration(yaml: text, file: path)
            // A file has no finer change than the whole: the reconciler compares it with what it holds.
            return .changed(.replaceAll(configuration.desiredState), problems: [], receivedAt: .now)
        } catch {
            return .rejected(error)
        }
    }

    public func run(deliver: @escaping @Sendable (SourceEvent) async -> Void) async throws {
        let first = FileIdentity(path: path)
        await deliver(Self.load(path: path))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    logger.info("SIGHUP: reading the configuration again", metadata: ["file": "\(path)"])
                    await deliver(Self.load(path: path))
                }
            }
            group.addTask {
                var lastSeen = first
                while !Task.isCancelled {
                    try await Task.sleep(for: pollInterval)
                    let now = FileIdentity(path: path)
                    guard now != lastSeen else { continue }
                    lastSeen = now
                    logger.info("the configuration file changed: reading it again", metadata: ["file": "\(path)"])
                    await deliver(Self.load(path: path))
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

/// What tells that a file changed without reading it.
struct FileIdentity: Equatable {
    var device: UInt64 = 0
    var inode: UInt64 = 0
    var size: Int64 = -1
    var modifiedSeconds: Int = 0
    var modifiedNanoseconds: Int = 0

    init(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modifiedSeconds = info.st_mtim.tv_sec
        modifiedNanoseconds = info.st_mtim.tv_nsec
    }
}
