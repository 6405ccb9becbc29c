build-fp/engine/forward.o: engine/forward.c engine/model_internal.h \
 engine/engine.h kernels/kernels.h
engine/model_internal.h:
engine/engine.h:
kernels/kernels.h:
