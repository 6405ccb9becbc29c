build-fp/kernels/cpu_attention.o: kernels/cpu_attention.c \
 kernels/cpu_fast_internal.h kernels/cpu_internal.h kernels/kernels.h
kernels/cpu_fast_internal.h:
kernels/cpu_internal.h:
kernels/kernels.h:
