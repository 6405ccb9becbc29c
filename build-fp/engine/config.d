build-fp/engine/config.o: engine/config.c engine/weights_internal.h \
 engine/engine.h kernels/kernels.h
engine/weights_internal.h:
engine/engine.h:
kernels/kernels.h:
