build-fp/engine/sampler.o: engine/sampler.c engine/sampler.h \
 engine/engine.h kernels/kernels.h
engine/sampler.h:
engine/engine.h:
kernels/kernels.h:
