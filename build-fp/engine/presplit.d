build-fp/engine/presplit.o: engine/presplit.c engine/engine.h \
 kernels/kernels.h engine/tokenizer_internal.h
engine/engine.h:
kernels/kernels.h:
engine/tokenizer_internal.h:
