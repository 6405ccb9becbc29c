build-fp/engine/corpus.o: engine/corpus.c engine/corpus.h
engine/corpus.h:
