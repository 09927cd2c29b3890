#include "cswiftletmemory.h"

uint16_t cmem_load_acquire_u16(const volatile uint16_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

void cmem_store_release_u16(volatile uint16_t *p, uint16_t value) { __atomic_store_n(p, value, __ATOMIC_RELEASE); }

void cmem_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
