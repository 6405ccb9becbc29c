build-fp/engine/tokenizer.o: engine/tokenizer.c engine/engine.h \
 kernels/kernels.h engine/tokenizer_internal.h engine/weights_internal.h
engine/engine.h:
kernels/kernels.h:
engine/tokenizer_internal.h:
engine/weights_internal.h:
