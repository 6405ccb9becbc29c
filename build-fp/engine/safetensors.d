build-fp/engine/safetensors.o: engine/safetensors.c \
 engine/weights_internal.h engine/engine.h kernels/kernels.h
engine/weights_internal.h:
engine/engine.h:
kernels/kernels.h:
