build-fp/engine/make_model.o: engine/make_model.c engine/corpus.h \
 engine/model_internal.h engine/engine.h kernels/kernels.h
engine/corpus.h:
engine/model_internal.h:
engine/engine.h:
kernels/kernels.h:
