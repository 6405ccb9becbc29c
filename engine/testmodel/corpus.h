/* Private to engine/testmodel/: the text the generated models learn their
 * tokenizer from, and the topic vocabularies that decide which experts are
 * hot.
 *
 * Topics are what make routing depend on content: make_model.c gives the
 * tokens of a topic's words a shared direction in the embeddings, and each
 * topic its own hot experts.  The bundled request files are written with
 * the same words, so two files on different topics heat different experts. */
#ifndef MR_ENGINE_TESTMODEL_CORPUS_H
#define MR_ENGINE_TESTMODEL_CORPUS_H

#include <stddef.h>

typedef struct {
    const char *name;
    const char *const *words;
    size_t n_words;
} mr_corpus_topic;

extern const mr_corpus_topic mr_corpus_topics[];
extern const size_t mr_corpus_n_topics;

/* Builds the training text (deterministic: the same bytes every time):
 * general English, the topics' sentences, some code, digits and a little
 * non-Latin text so every kind of pre-split piece is seen.  *text is
 * malloc'd and NUL-terminated.  Returns 0, or -1 when out of memory. */
int mr_corpus_build(char **text, size_t *len);

#endif
