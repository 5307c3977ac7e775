#ifndef CANARY_HEAP_TRIM_H
#define CANARY_HEAP_TRIM_H
/// Returns the heap's free memory to the kernel (glibc's malloc_trim over every arena), so that
/// what a large one-off piece of work freed (a parsed file, a dump of the whole table) does not
/// stay resident. Returns 1 when memory was released. A no-op returning 0 without glibc.
int canary_heap_trim(void);
#endif
