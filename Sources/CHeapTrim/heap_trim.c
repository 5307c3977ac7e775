#include "heap_trim.h"
#if defined(__GLIBC__)
#include <malloc.h>
int canary_heap_trim(void) { return malloc_trim(0); }
#else
int canary_heap_trim(void) { return 0; }
#endif
