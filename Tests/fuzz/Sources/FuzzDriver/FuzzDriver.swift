#if canImport(Glibc)
import Glibc
#endif

/// libFuzzer's own entry point (compiler-rt's FuzzerDriver): it parses libFuzzer's flags and runs
/// the loop. Called from the executable's `main`, because SwiftPM names an executable's entry
/// point itself on Linux and libFuzzer's `main` is then never linked.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Runs libFuzzer with the process's arguments on `target` (one input per call) and exits with
/// its status: 0, or non-zero on a crash, a timeout or a memory blow-up.
public func runFuzzer(_ target: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, target))
}
