build-fp/kernels/cpu_ref.o: kernels/cpu_ref.c kernels/cpu_internal.h \
 kernels/kernels.h
kernels/cpu_internal.h:
kernels/kernels.h:
