build-fp/engine/strmap.o: engine/strmap.c engine/tokenizer_internal.h
engine/tokenizer_internal.h:
