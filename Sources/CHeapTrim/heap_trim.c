#include "heap_trim.h"
#if defined(__GLIBC__)
#include <malloc.h>
int canary_heap_trim(void) { return malloc_trim(0); }
void canary_limit_heap_arenas(int count) { (void)mallopt(M_ARENA_MAX, count); }
#else
int canary_heap_trim(void) { return 0; }
void canary_limit_heap_arenas(int count) { (void)count; }
#endif
