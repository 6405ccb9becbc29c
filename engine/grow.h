/* Private to engine/: the one way engine code grows an array. */
#ifndef MR_ENGINE_GROW_H
#define MR_ENGINE_GROW_H

#include <stdbool.h>
#include <stddef.h>

/* Makes *items ([*cap] elements of `size` bytes) hold at least `need`,
 * doubling so that appends cost O(1) on average.  False when out of memory;
 * *items and *cap are then as they were. */
bool mr_grow(void **items, size_t *cap, size_t need, size_t size);

#endif
