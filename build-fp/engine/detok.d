build-fp/engine/detok.o: engine/detok.c engine/engine.h kernels/kernels.h
engine/engine.h:
kernels/kernels.h:
