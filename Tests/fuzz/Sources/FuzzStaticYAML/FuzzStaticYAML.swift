import FuzzDriver
import StaticConfig

/// One input: a static configuration file. It is read or refused with one error line; never a
/// trap, never a hang, never memory out of proportion to the file (libFuzzer's -rss_limit_mb and
/// -timeout enforce the last two).
// Also libFuzzer's own entry point, for a debug build (whose executables link libFuzzer's `main`).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzStaticYAML(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    do {
        _ = try StaticConfiguration(yaml: text, file: "fuzz.yaml")
    } catch {
        let line = "\(error)"
        // One line, bounded: a 10 MB input must not become a 10 MB error.
        // Bytes, not characters: "\r\n" is one character, and not "\n".
        precondition(!line.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }), "a multi-line error: \(line.prefix(200))")
        precondition(line.utf8.count <= 4096, "an error of \(line.utf8.count) bytes")
    }
    return 0
}

@main
enum Main {
    static func main() { runFuzzer(fuzzStaticYAML) }
}
