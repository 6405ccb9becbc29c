/*
 * A byte-string -> int32 map for vocabularies (151k entries for Qwen3) and
 * merge tables: open addressing with linear probing, kept at most half
 * full so that a miss ends after a probe or two.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_internal.h"

static uint64_t hash_bytes(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

int mr_strmap_init(mr_strmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2)
        cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    m->count = 0;
    return m->slots ? 0 : -1;
}

void mr_strmap_free(mr_strmap *m)
{
    if (!m->slots)
        return;
    for (size_t i = 0; i <= m->mask; i++)
        free(m->slots[i].key);
    free(m->slots);
    m->slots = NULL;
}

static mr_strmap_slot *find_slot(const mr_strmap *m, const char *key, size_t len)
{
    for (size_t i = (size_t)hash_bytes(key, len) & m->mask;; i = (i + 1) & m->mask) {
        mr_strmap_slot *s = &m->slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

int32_t mr_strmap_get(const mr_strmap *m, const char *key, size_t len)
{
    const mr_strmap_slot *s = find_slot(m, key, len);
    return s->key ? s->value : -1;
}

static int grow(mr_strmap *m)
{
    mr_strmap bigger;
    if (mr_strmap_init(&bigger, (m->mask + 1)) != 0)
        return -1;
    for (size_t i = 0; i <= m->mask; i++)
        if (m->slots[i].key)
            *find_slot(&bigger, m->slots[i].key, m->slots[i].len) = m->slots[i];
    bigger.count = m->count;
    free(m->slots);
    *m = bigger;
    return 0;
}

int mr_strmap_put(mr_strmap *m, const char *key, size_t len, int32_t value)
{
    if ((m->count + 1) * 2 > m->mask + 1 && grow(m) != 0)
        return -1;
    mr_strmap_slot *s = find_slot(m, key, len);
    if (!s->key) {
        s->key = malloc(len ? len : 1);
        if (!s->key)
            return -1;
        memcpy(s->key, key, len);
        s->len = (uint32_t)len;
        m->count++;
    }
    s->value = value;
    return 0;
}
