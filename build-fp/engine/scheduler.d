build-fp/engine/scheduler.o: engine/scheduler.c engine/model_internal.h \
 engine/engine.h kernels/kernels.h engine/sampler.h
engine/model_internal.h:
engine/engine.h:
kernels/kernels.h:
engine/sampler.h:
