#ifndef CANARY_HEAP_TRIM_H
#define CANARY_HEAP_TRIM_H
/// Returns the heap's free memory to the kernel (glibc's malloc_trim over every arena), so that
/// what a large one-off piece of work freed (a parsed file, a dump of the whole table) does not
/// stay resident. Returns 1 when memory was released. A no-op returning 0 without glibc.
int canary_heap_trim(void);
/// Caps glibc's malloc arenas (M_ARENA_MAX). glibc gives threads that contend for the heap arenas of
/// their own, up to 8 per core, and memory freed in one stays with it: the daemon's work moves
/// between its reconciler thread, NIO's threads and Swift's pool, so a large table freed on one and
/// rebuilt on another stays resident twice. Returns 1 on success; a no-op returning 0 without glibc.
int canary_limit_arenas(int count);
#endif
