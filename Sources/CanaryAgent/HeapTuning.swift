import CHeapTrim

/// The daemon's malloc settings.
public enum HeapTuning {
    /// glibc's arenas the daemon may use: two (the main one and one more) keep memory freed on one
    /// thread reusable on the others, at the price of some contention on allocation, which this
    /// workload (one sync at a time) barely has. See `canary_limit_arenas`.
    public static let arenas = 2

    /// Applies `arenas`; call before the daemon's threads start.
    public static func limitArenas() {
        _ = canary_limit_arenas(Int32(arenas))
    }
}
