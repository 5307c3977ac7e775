/// Cuts a byte stream into lines: a watch body is newline-delimited JSON, and the network splits it
/// anywhere (one event over many chunks, many events in one chunk). Blank lines are skipped, a
/// trailing `\r` is dropped. Scanning resumes where it stopped, so a very large event arriving in
/// many small chunks costs linear time.
public struct NewlineDelimitedFramer: Sendable {
    /// The longest line accepted; a longer one is an error rather than unbounded memory.
    public let maximumLineLength: Int
    private var buffer: [UInt8] = []
    private var scannedUpTo = 0

    /// A line grew past `maximumLineLength` without ending.
    public struct LineTooLong: Error, Sendable, Equatable {
        public var limit: Int
        public init(limit: Int) { self.limit = limit }
    }

    public init(maximumLineLength: Int = 4 << 20) {
        self.maximumLineLength = maximumLineLength
    }

    /// Takes the next bytes and returns the lines they complete.
    public mutating func append(_ bytes: some Sequence<UInt8>) throws(LineTooLong) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        var lines: [[UInt8]] = []
        var lineStart = 0
        var index = scannedUpTo
        while index < buffer.count {
            if buffer[index] == UInt8(ascii: "\n") {
                appendLine(buffer[lineStart..<index], to: &lines)
                lineStart = index + 1
            }
            index += 1
        }
        if lineStart > 0 { buffer.removeFirst(lineStart) }
        scannedUpTo = buffer.count
        if buffer.count > maximumLineLength { throw LineTooLong(limit: maximumLineLength) }
        return lines
    }

    /// The last line, when the stream ended without a newline after it.
    public mutating func finish() -> [UInt8]? {
        var lines: [[UInt8]] = []
        appendLine(buffer[...], to: &lines)
        buffer.removeAll()
        scannedUpTo = 0
        return lines.first
    }

    /// Bytes held for a line not yet complete.
    public var pendingByteCount: Int { buffer.count }

    private func appendLine(_ line: ArraySlice<UInt8>, to lines: inout [[UInt8]]) {
        var line = line
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        guard line.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }) else { return }
        lines.append(Array(line))
    }
}
