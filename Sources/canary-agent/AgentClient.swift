import ArgumentParser
import AsyncHTTPClient
import CanaryAgent
import CanaryCore
import Foundation
import NIOCore

/// Where the running agent listens, for the commands that ask it.
struct AgentOptions: ParsableArguments {
    @Option(name: .long, help: "HOST:PORT of the running agent's endpoints (its --listen).")
    var agent: String = "127.0.0.1:9109"

    /// GETs a path from the running agent; a refused connection or an error status is one clear line.
    func get(_ path: String) async throws -> ByteBuffer {
        guard let address = ListenAddress(agent) else { throw CommandError("--agent: '\(agent)' is not HOST:PORT") }
        let host = address.host.contains(":") ? "[\(address.host)]" : address.host
        let url = "http://\(host):\(address.port)\(path)"
        let response: HTTPClientResponse
        var body: ByteBuffer
        do {
            response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
            body = try await response.body.collect(upTo: 64 << 20)
        } catch {
            throw CommandError("cannot reach the agent at \(agent) (\(path)): \(error); is `canary-agent run` running with --listen \(agent)?")
        }
        guard response.status == .ok else {
            let text = body.readString(length: body.readableBytes)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            throw CommandError("the agent at \(agent) answered \(path) with \(response.status.code): \(text)")
        }
        return body
    }

    func status() async throws -> AgentStatus {
        try decode(AgentStatus.self, from: try await get("/status"), path: "/status")
    }

    func desiredState() async throws -> DesiredState {
        let document = try decode(DesiredStateDocument.self, from: try await get("/desired"), path: "/desired")
        do {
            return try document.desiredState()
        } catch {
            throw CommandError("\(error)")
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, from body: ByteBuffer, path: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(type, from: Data(body.readableBytesView))
        } catch {
            throw CommandError("the agent at \(agent) sent \(path) that does not decode: \(error)")
        }
    }
}
