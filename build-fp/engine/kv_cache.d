build-fp/engine/kv_cache.o: engine/kv_cache.c engine/model_internal.h \
 engine/engine.h kernels/kernels.h
engine/model_internal.h:
engine/engine.h:
kernels/kernels.h:
