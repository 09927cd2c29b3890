/* CSwiftletMemory: the thin C layer under SwiftletMemory.
 *
 * Ordered accesses to guest RAM that Swift cannot express (its `Atomic` cannot overlay memory it
 * does not own): the acquire load and release store of a 16-bit virtqueue index, and a full fence.
 * The pointers come from SwiftletMemory after its bounds and alignment checks. Nothing else lives here. */
#pragma once
#include <stdint.h>

/* Loads the 16-bit value at `p` with acquire ordering (`p` is 2-byte aligned). */
uint16_t cmem_load_acquire_u16(const volatile uint16_t *_Nonnull p);

/* Stores `value` at `p` with release ordering (`p` is 2-byte aligned). */
void cmem_store_release_u16(volatile uint16_t *_Nonnull p, uint16_t value);

/* A full (sequentially consistent) memory fence: orders earlier stores before later loads. */
void cmem_fence(void);
