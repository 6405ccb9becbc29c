build-fp/kernels/cpu_matmul.o: kernels/cpu_matmul.c \
 kernels/cpu_fast_internal.h kernels/cpu_internal.h kernels/kernels.h
kernels/cpu_fast_internal.h:
kernels/cpu_internal.h:
kernels/kernels.h:
