build-fp/kernels/cpu_memory.o: kernels/cpu_memory.c \
 kernels/cpu_internal.h kernels/kernels.h
kernels/cpu_internal.h:
kernels/kernels.h:
