import CHeapTrim

/// The daemon's heap: glibc keeps freed memory per arena, and makes up to eight arenas per core.
public enum Heap {
    /// Caps the malloc arenas; call first thing in the daemon, before its threads start.
    public static func limitArenas(to count: Int32 = 2) {
        canary_limit_heap_arenas(count)
    }

    /// Gives the heap's free memory back to the kernel (after a large one-off piece of work).
    @discardableResult
    public static func trim() -> Bool {
        canary_heap_trim() == 1
    }
}
