build-fp/kernels/backend.o: kernels/backend.c kernels/cpu_internal.h \
 kernels/kernels.h
kernels/cpu_internal.h:
kernels/kernels.h:
