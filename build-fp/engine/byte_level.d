build-fp/engine/byte_level.o: engine/byte_level.c \
 engine/tokenizer_internal.h
engine/tokenizer_internal.h:
