#include "heap_trim.h"
#if defined(__GLIBC__)
#include <malloc.h>
int canary_heap_trim(void) { return malloc_trim(0); }
int canary_limit_arenas(int count) { return mallopt(M_ARENA_MAX, count); }
#else
int canary_heap_trim(void) { return 0; }
int canary_limit_arenas(int count) { (void)count; return 0; }
#endif
