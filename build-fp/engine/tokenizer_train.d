build-fp/engine/tokenizer_train.o: engine/tokenizer_train.c \
 engine/engine.h kernels/kernels.h engine/tokenizer_internal.h
engine/engine.h:
kernels/kernels.h:
engine/tokenizer_internal.h:
