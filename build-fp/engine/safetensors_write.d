build-fp/engine/safetensors_write.o: engine/safetensors_write.c \
 engine/weights_internal.h engine/engine.h kernels/kernels.h
engine/weights_internal.h:
engine/engine.h:
kernels/kernels.h:
