#include "engine/grow.h"

#include <stdlib.h>

bool mr_grow(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return true;
    size_t grown = *cap ? *cap * 2 : 16;
    while (grown < need)
        grown *= 2;
    void *p = realloc(*items, grown * size);
    if (!p)
        return false;
    *items = p;
    *cap = grown;
    return true;
}
