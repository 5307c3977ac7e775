#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a finished command printed and how it exited.
public struct CommandResult: Hashable, Sendable {
    /// The exit status (0 for success), or 128 + the signal number when a signal ended it.
    public var status: Int32
    public var standardOutput: String
    public var standardError: String

    public init(status: Int32, standardOutput: String = "", standardError: String = "") {
        self.status = status
        self.standardOutput = standardOutput
        self.standardError = standardError
    }
}

/// Runs external commands (iptables-restore and friends). Injectable so that unit tests can see
/// exactly what would be run and fed, without running anything.
public protocol CommandRunner: Sendable {
    /// Runs `executable` (looked up in PATH) with `arguments`, feeding `input` on its standard
    /// input, and waits for it. A command that cannot be started throws; one that exits non-zero
    /// returns its status.
    func run(_ executable: String, _ arguments: [String], input: String) throws(NodeNetworkError) -> CommandResult
}

/// The real runner: posix_spawnp, with standard input, output and error on socket pairs (input
/// is written with MSG_NOSIGNAL, so a command that exits early never kills the agent with SIGPIPE).
/// The child inherits the network namespace of the calling thread. A command still running
/// after `timeoutSeconds` is killed.
public struct SpawnCommandRunner: CommandRunner {
    public var timeoutSeconds: Int

    public init(timeoutSeconds: Int = 60) {
        self.timeoutSeconds = timeoutSeconds
    }

    public func run(_ executable: String, _ arguments: [String], input: String) throws(NodeNetworkError) -> CommandResult {
        let commandLine = ([executable] + arguments).joined(separator: " ")
        func failure(_ call: String, _ code: Int32) -> NodeNetworkError {
            .command(command: commandLine, output: "\(call): \(String(cString: strerror(code)))")
        }

        // Socket pairs rather than pipes: created close-on-exec in one call, and written with send.
        var pairs: [[Int32]] = []
        for _ in 0..<3 {
            var pair: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                let code = errno
                pairs.joined().forEach { _ = close($0) }
                throw failure("socketpair", code)
            }
            pairs.append(pair)
        }
        let (inputPair, outputPipe, errorPipe) = (pairs[0], pairs[1], pairs[2])
        // The child's ends: dup2 onto 0, 1, 2 clears their close-on-exec flag.
        let childEnds = [inputPair[1], outputPipe[1], errorPipe[1]]
        var ourEnds = [inputPair[0], outputPipe[0], errorPipe[0]]
        defer { ourEnds.forEach { if $0 >= 0 { _ = close($0) } } }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, end) in childEnds.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, end, Int32(target))
        }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, executable, &actions, nil, argv, environ)
        childEnds.forEach { _ = close($0) }
        guard spawned == 0 else { throw failure("spawn", spawned) }

        for end in ourEnds { _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK) }
        var pendingInput = Array(input.utf8)[...]
        if pendingInput.isEmpty {
            _ = close(ourEnds[0])
            ourEnds[0] = -1
        }
        var output: [UInt8] = []
        var errorOutput: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let deadline = Self.now() + Double(timeoutSeconds)
        var timedOut = false

        while ourEnds[1] >= 0 || ourEnds[2] >= 0 {
            var polled: [pollfd] = []
            if ourEnds[0] >= 0 { polled.append(pollfd(fd: ourEnds[0], events: Int16(POLLOUT), revents: 0)) }
            if ourEnds[1] >= 0 { polled.append(pollfd(fd: ourEnds[1], events: Int16(POLLIN), revents: 0)) }
            if ourEnds[2] >= 0 { polled.append(pollfd(fd: ourEnds[2], events: Int16(POLLIN), revents: 0)) }
            let remaining = deadline - Self.now()
            if remaining <= 0 {
                timedOut = true
                break
            }
            let ready = poll(&polled, nfds_t(polled.count), Int32(min(remaining * 1000, 1000)))
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            for entry in polled where entry.revents != 0 {
                if entry.fd == ourEnds[0] {
                    let written = pendingInput.withUnsafeBytes { raw in
                        send(entry.fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL))
                    }
                    if written > 0 { pendingInput = pendingInput.dropFirst(written) }
                    if pendingInput.isEmpty || (written < 0 && errno != EAGAIN && errno != EINTR) {
                        // All sent (or the command stopped reading): end of its input.
                        _ = close(entry.fd)
                        ourEnds[0] = -1
                    }
                } else {
                    let count = chunk.withUnsafeMutableBytes { raw in read(entry.fd, raw.baseAddress, raw.count) }
                    if count > 0 {
                        if entry.fd == ourEnds[1] { output += chunk[0..<count] } else { errorOutput += chunk[0..<count] }
                    } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                        let index = entry.fd == ourEnds[1] ? 1 : 2
                        _ = close(entry.fd)
                        ourEnds[index] = -1
                    }
                }
            }
        }
        if timedOut { _ = kill(pid, SIGKILL) }

        var waitStatus: Int32 = 0
        while waitpid(pid, &waitStatus, 0) < 0 {
            guard errno == EINTR else { throw failure("waitpid", errno) }
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG by hand: the macros are not imported.
        let signal = waitStatus & 0x7F
        let status = signal == 0 ? (waitStatus >> 8) & 0xFF : 128 + signal
        var standardError = String(decoding: errorOutput, as: UTF8.self)
        if timedOut { standardError += "\n(killed after \(timeoutSeconds) s)" }
        return CommandResult(
            status: status, standardOutput: String(decoding: output, as: UTF8.self), standardError: standardError)
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
