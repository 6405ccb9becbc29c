build-fp/engine/chat.o: engine/chat.c engine/model_internal.h \
 engine/engine.h kernels/kernels.h
engine/model_internal.h:
engine/engine.h:
kernels/kernels.h:
