/*
 * The tokenizer training text for generated models.  It is assembled from
 * sentence frames and word lists rather than stored, so that it is small in
 * the source and large enough (a few hundred kB) for a 2k-token BPE
 * vocabulary to learn whole words of every topic.
 */
#include "engine/testmodel/corpus.h"
#include "engine/grow.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORDS(name, ...)                                                                     \
    static const char *const name[] = {__VA_ARGS__}

WORDS(cooking_words, "recipe", "garlic", "onion", "tomato", "butter", "flour", "oven", "simmer",
      "saute", "roast", "bake", "pasta", "sauce", "basil", "pepper", "salt", "olive", "lemon",
      "chicken", "potato", "carrot", "soup", "stew", "bread", "dough", "yeast", "sugar",
      "vinegar", "ginger", "cumin", "skillet", "braise", "marinade", "cheese", "cream",
      "mushroom", "spinach", "rice", "noodles", "broth", "dessert", "chocolate", "pastry",
      "knead", "whisk", "grill", "parsley", "cinnamon", "spoon", "kitchen", "ingredients",
      "eggs", "cake", "sponge", "thyme", "celery", "lentils", "beef", "chop", "slice",
      "crisp", "golden", "season", "fry", "boil", "bacon", "salad", "honey", "yogurt",
      "tofu", "carrots");
WORDS(code_words, "function", "variable", "compiler", "pointer", "array", "integer", "string",
      "return", "struct", "python", "javascript", "rust", "class", "method", "module",
      "import", "library", "debug", "exception", "thread", "mutex", "buffer", "socket",
      "parser", "syntax", "recursion", "algorithm", "binary", "stack", "queue", "heap",
      "hashmap", "interface", "runtime", "kernel", "malloc", "loop", "boolean", "lambda",
      "iterator", "regex", "json", "database", "query", "schema", "commit", "branch",
      "refactor", "unittest", "segfault", "linker", "program", "compile", "warnings",
      "declare", "parse", "error", "static", "debugger", "trace", "index", "recursive",
      "tree", "node", "memory", "leaks", "free", "null", "bytes", "git",
      "server", "request", "handler", "cache", "vector");
WORDS(travel_words, "flight", "airport", "hotel", "passport", "luggage", "itinerary", "beach",
      "mountain", "museum", "train", "station", "ticket", "visa", "journey", "island",
      "hostel", "backpack", "tourist", "castle", "village", "harbor", "cruise", "safari",
      "glacier", "desert", "canyon", "temple", "market", "festival", "border", "currency",
      "suitcase", "booking", "reservation", "guidebook", "sightseeing", "coastline",
      "volcano", "waterfall", "lagoon", "vineyard", "trail", "hiking", "camping", "ferry",
      "cathedral", "palace", "souvenir", "passenger", "departure", "arrival", "hike",
      "alps", "boots", "jacket", "pack", "week", "tour", "guide", "map", "route", "bus",
      "taxi", "city", "coast", "lake", "sunset", "rental", "budget", "abroad", "trip");

/* Common English words, for sentences of no topic. */
WORDS(general_words, "the", "of", "and", "to", "in", "is", "that", "it", "for", "was",
      "on", "are", "as", "with", "his", "they", "at", "be", "this", "from",
      "have", "or", "by", "one", "had", "not", "but", "what", "all", "were",
      "when", "we", "there", "can", "an", "your", "which", "their", "said", "if",
      "do", "will", "each", "about", "how", "up", "out", "them", "then", "she",
      "many", "some", "so", "these", "would", "other", "into", "has", "more", "her",
      "two", "like", "him", "see", "time", "could", "no", "make", "than", "first",
      "been", "its", "who", "now", "people", "my", "made", "over", "did", "down",
      "only", "way", "find", "use", "may", "water", "long", "little", "very", "after",
      "words", "called", "just", "where", "most", "know", "get", "through", "back", "much",
      "go", "good", "new", "write", "our", "me", "man", "too", "any", "day",
      "same", "right", "look", "think", "also", "around", "another", "came", "come", "work",
      "three", "word", "must", "because", "does", "part", "even", "place", "well", "such",
      "here", "take", "why", "things", "help", "put", "years", "different", "away", "again",
      "off", "went", "old", "number", "great", "tell", "men", "say", "small", "every",
      "found", "still", "between", "name", "should", "home", "big", "give", "air", "line",
      "set", "own", "under", "read", "last", "never", "us", "left", "end", "along",
      "while", "might", "next", "sound", "below", "saw", "something", "thought", "both", "few",
      "those", "always", "looked", "show", "large", "often", "together", "asked", "house", "world",
      "going", "want", "school", "important", "until", "form", "food", "keep", "children", "feet",
      "land", "side", "without", "boy", "once", "animals", "life", "enough", "took", "sometimes",
      "four", "head", "above", "kind", "began", "almost", "live", "page", "got", "earth",
      "need", "far", "hand", "high", "year", "mother", "light", "parts", "country", "father",
      "let", "night", "following", "picture", "being", "study", "second", "eyes", "soon", "times",
      "story", "boys", "since", "white", "days", "ever", "paper", "hard", "near", "sentence",
      "better", "best", "across", "during", "today", "others", "however", "sure", "means", "knew",
      "itself", "try", "told", "young", "miles", "sun", "ways", "thing", "whole", "hear",
      "example", "heard", "several", "change", "answer", "room", "sea", "against", "top", "turned",
      "learn", "point", "city", "play", "toward", "five", "using", "himself", "usually", "money",
      "seen", "car", "morning", "given", "body", "family", "later", "friends", "turn", "move",
      "face", "door", "cut", "done", "group", "true", "leave", "color", "red", "friend",
      "pretty", "eat", "front", "feel", "fact", "hour", "rest", "half", "ground");

const mr_corpus_topic mr_corpus_topics[] = {
    {"cooking", cooking_words, sizeof cooking_words / sizeof *cooking_words},
    {"code", code_words, sizeof code_words / sizeof *code_words},
    {"travel", travel_words, sizeof travel_words / sizeof *travel_words},
};
const size_t mr_corpus_n_topics = sizeof mr_corpus_topics / sizeof *mr_corpus_topics;

/* Frames take up to two words of a topic (%1, %2). */
static const char *const topic_frames[] = {
    "How do I use %1 with %2?\n",
    "Tell me more about the %1 and why the %2 matters.\n",
    "I think the %1 is better than the %2, don't you?\n",
    "Can you explain %1 to a beginner? Start with %2.\n",
    "The %1 was great, but we'll need another %2 tomorrow.\n",
    "Write a short note about %1, %2 and what they have in common.\n",
    "What's the difference between a %1 and a %2?\n",
    "My friend said: \"%1 first, then %2.\" Is that right?\n",
    "List three facts about %1. Then compare it with %2.\n",
    "She'd never tried %1 before; now %2 is her favourite.\n",
};

WORDS(general_sentences,
      "The quick brown fox jumps over the lazy dog.\n",
      "It was a bright cold day in April, and the clocks were striking thirteen.\n",
      "Please answer in one short paragraph.\n",
      "Thank you! That was very helpful, and I have one more question.\n",
      "In 2024, about 1,250 people visited; in 2025 it was 3,780 (up 202%).\n",
      "We're sure they've done it, and you'll see why I'm right.\n",
      "Summarize the following text in your own words.\n",
      "Once upon a time there was a small house near the river.\n",
      "Why is the sky blue? Because air scatters short wavelengths more.\n",
      "Good morning, everyone. Today we will talk about something new.\n",
      "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 3.14 2.718 1e-5 65536\n",
      "E-mail me at name@example.com or call +1 (555) 010-9999.\n",
      "Café, naïve, résumé, façade, jalapeño, Zürich, São Paulo.\n",
      "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.\n",
      "Привет, как дела? Γειά σου κόσμε! مرحبا بالعالم\n",
      "Emoji: 😀 🚀 🍕 ✈️ 🐍 ❤️ 👍🏽\n",
      "    Indented line\twith a tab\n\n\n",
      "int main(void) { printf(\"hello, world\\n\"); return 0; }\n",
      "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i)\n",
      "const xs = [1, 2, 3].map((x) => x * 2); // doubled\n",
      "if (ptr == NULL || len > cap) { errno = EINVAL; return -1; }\n",
      "SELECT name, count(*) FROM orders WHERE total > 100 GROUP BY name;\n",
      "{\"key\": \"value\", \"list\": [true, false, null], \"n\": -12.5}\n",
      "<|im_start|>user\nHello<|im_end|>\n",
      "Yes. No. Maybe. Of course! Really? Well... I don't know.\n");

/* A small deterministic generator: the corpus must not change between
 * runs, or models made from the same seed would differ. */
static uint64_t next_random(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 33;
}

typedef struct {
    char *data;
    size_t len, cap;
} text_buf;

static int append(text_buf *b, const char *s, size_t n)
{
    if (!mr_grow((void **)&b->data, &b->cap, b->len + n + 1, 1))
        return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int append_frame(text_buf *b, const char *frame, const char *w1, const char *w2)
{
    for (const char *p = frame; *p; p++) {
        const char *word = NULL;
        if (p[0] == '%' && (p[1] == '1' || p[1] == '2'))
            word = *++p == '1' ? w1 : w2;
        if (append(b, word ? word : p, word ? strlen(word) : 1) != 0)
            return -1;
    }
    return 0;
}

/* Topic sentences, sized so each topic word is seen often enough to become
 * one or two tokens, and some words capitalised as at a sentence start. */
#define TOPIC_SENTENCES 1500
#define GENERAL_REPEATS 40
#define GENERAL_SENTENCES 6000

int mr_corpus_build(char **text, size_t *len)
{
    text_buf b = {0};
    uint64_t state = 0x6d6f6572756eULL; /* "moerun" */
    size_t n_general = sizeof general_sentences / sizeof *general_sentences;
    size_t n_frames = sizeof topic_frames / sizeof *topic_frames;
    for (int i = 0; i < TOPIC_SENTENCES * (int)mr_corpus_n_topics; i++) {
        const mr_corpus_topic *t = &mr_corpus_topics[i % mr_corpus_n_topics];
        const char *w1 = t->words[next_random(&state) % t->n_words];
        const char *w2 = t->words[next_random(&state) % t->n_words];
        if (append_frame(&b, topic_frames[next_random(&state) % n_frames], w1, w2) != 0)
            goto oom;
        if (i % 4 == 0) {
            char capital[64];
            snprintf(capital, sizeof capital, "%c%s %s. ", w1[0] - 'a' + 'A', w1 + 1, w2);
            if (append(&b, capital, strlen(capital)) != 0)
                goto oom;
        }
        if (i % 10 == 0) {
            const char *s = general_sentences[next_random(&state) % n_general];
            if (append(&b, s, strlen(s)) != 0)
                goto oom;
        }
    }
    size_t n_words = sizeof general_words / sizeof *general_words;
    for (int i = 0; i < GENERAL_SENTENCES; i++) {
        int length = 4 + (int)(next_random(&state) % 10);
        for (int w = 0; w < length; w++) {
            const char *word = general_words[next_random(&state) % n_words];
            char buf[64];
            snprintf(buf, sizeof buf, w == 0 ? "%c%s" : " %c%s",
                     w == 0 ? word[0] - 'a' + 'A' : word[0], word + 1);
            if (append(&b, buf, strlen(buf)) != 0)
                goto oom;
        }
        char buf[32];
        if (i % 5 == 0)
            snprintf(buf, sizeof buf, ", %d.\n", (int)(next_random(&state) % 2000));
        else
            snprintf(buf, sizeof buf, i % 7 == 0 ? "?\n" : ".\n");
        if (append(&b, buf, strlen(buf)) != 0)
            goto oom;
    }
    for (int r = 0; r < GENERAL_REPEATS; r++)
        for (size_t s = 0; s < n_general; s++)
            if (append(&b, general_sentences[s], strlen(general_sentences[s])) != 0)
                goto oom;
    *text = b.data;
    *len = b.len;
    return 0;
oom:
    free(b.data);
    return -1;
}
