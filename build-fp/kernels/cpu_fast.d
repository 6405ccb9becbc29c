build-fp/kernels/cpu_fast.o: kernels/cpu_fast.c \
 kernels/cpu_fast_internal.h kernels/cpu_internal.h kernels/kernels.h
kernels/cpu_fast_internal.h:
kernels/cpu_internal.h:
kernels/kernels.h:
