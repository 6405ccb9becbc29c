build-fp/engine/model.o: engine/model.c engine/model_internal.h \
 engine/engine.h kernels/kernels.h
engine/model_internal.h:
engine/engine.h:
kernels/kernels.h:
