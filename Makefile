# Top-level entry points: `make demo` and `make test` (README). Both install dependencies first.
BUILD ?= build
JOBS  ?= $(shell nproc)
# Debian packages the build and tests need. python3-torch is only for regenerating golden files;
# sentencepiece (spm_train/spm_encode/spm_decode) lets the tests also compare with SentencePiece
# live, beside the committed golden ids (tests/golden/sentencepiece). gnuplot-nox draws `moe plot`.
# libboost-dev has Boost.Beast (`moe serve`); chromium and chromium-driver run its page's browser test.
# libdnnl-dev (oneDNN) runs precision bf16 on the CPU's AVX512-BF16 instructions (framework/bf16_gemm.cpp).
# clang and libclang-rt-14-dev (its libFuzzer and sanitizer runtimes) build the fuzz targets (make fuzz).
DEB_PKGS := build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev \
            libyaml-cpp-dev libboost-dev libgtest-dev libopenblas-dev libopenblas0-pthread libdnnl-dev \
            nlohmann-json3-dev zlib1g-dev libzstd-dev libsentencepiece-dev sentencepiece gnuplot-nox \
            chromium chromium-driver clang libclang-rt-14-dev

.PHONY: deps build test unit sanitize-build sanitize tsan fuzz demo clean golden gpu-carry

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$(echo $$missing | tr '\n' ' ')"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit -j $(JOBS)

# AddressSanitizer + UndefinedBehaviorSanitizer, the unit, e2e and mpi tests under them: any
# finding fails the test. One clang build at -O1 (build-sanitize/) serves this and `make fuzz`: its libraries
# also carry libFuzzer's coverage instrumentation, which the tests ignore. clang compiles this 2-5x
# faster than GCC at -O2 and its UBSan also checks float-to-int conversions. OpenMPI's own
# allocations at exit are suppressed (tests/sanitizers/lsan.supp says why; no_dlclose.c keeps its
# components mapped so the suppressions can name them); nothing of ours is. The tests that start
# MPI record full allocation stacks (the slow unwinder: MPI's libraries have no frame pointers);
# the rest keep the fast one. .ci/run runs this after `make test`.
SAN_BUILD ?= build-sanitize
SAN_ENV = LD_PRELOAD=$(abspath $(SAN_BUILD))/no_dlclose.so \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
SAN_ASAN = detect_leaks=1:abort_on_error=1:verify_asan_link_order=0
sanitize-build: deps
	CC=clang CXX=clang++ cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
	  -DMOE_SANITIZE=address,undefined -DMOE_FUZZ=ON -DMOE_CUDA=OFF
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cc -shared -fPIC -O2 -o $(SAN_BUILD)/no_dlclose.so tests/sanitizers/no_dlclose.c

# The e2e and mpi tests run the instrumented `moe` (every process it starts under mpirun too), all
# but three that train for minutes: at -O1 with ASan, e2e_tasks' 100 steps of the shakespeare model
# ran past 8 minutes. What those three run, the others run on smaller models.
SAN_SLOW = ^e2e_tasks$$|^e2e_kill_resume$$|^mpi_fsdp_expert_parallel$$
sanitize: sanitize-build
	cd $(SAN_BUILD) && $(SAN_ENV) ASAN_OPTIONS=$(SAN_ASAN) ctest --output-on-failure -L unit -E '^test_parallel' -j $(JOBS)
	cd $(SAN_BUILD) && $(SAN_ENV) ASAN_OPTIONS=$(SAN_ASAN):fast_unwind_on_malloc=0 ctest --output-on-failure \
	  -R '^test_parallel|^e2e_|^mpi_' -E '$(SAN_SLOW)' -j $(JOBS)

# ThreadSanitizer (docs/testing.md): the unit tests of the code that runs threads of its own, the
# thread pool under the kernels and the model's ops, the async checkpoint writer, preprocess's and
# the BPE trainer's workers, the dataset's parallel checks, tokenizers used from many threads.
TSAN_BUILD ?= build-tsan
TSAN_TESTS := test_framework_ops test_framework_moe_kernels test_framework_attention test_ckpt_async test_ckpt_commit \
              test_data_preprocess test_data_resume test_data_bpe test_data_dataset test_data_sentencepiece
tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
	  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DMOE_SANITIZE=thread -DMOE_CUDA=OFF
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target $(TSAN_TESTS)
	cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/sanitizers/tsan.supp \
	  ctest --output-on-failure -j $(JOBS) -R '^($(shell echo $(TSAN_TESTS) | tr ' ' '|'))$$'

# libFuzzer targets (tests/fuzz; docs/testing.md "Fuzzing"): every parser of a user's file, built
# in the sanitizer build above (clang, AddressSanitizer, UBSan, coverage), each replaying its
# regression inputs and then fuzzing FUZZ_SECONDS from its committed seeds. .ci/run runs it after
# `make sanitize` (the build is then done); a long run is `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 20
fuzz: sanitize-build
	JOBS=$(JOBS) tests/fuzz/run.sh $(SAN_BUILD)/fuzz $(FUZZ_SECONDS)

demo: build
	./scripts/demo.sh $(BUILD)/moe

# Regenerate the PyTorch golden files (needs Debian's python3-torch; not part of `make deps`).
golden:
	/usr/bin/python3 tests/golden/make_golden.py tests/golden

# What a GPU machine (the device tool; ../shared/docs/GPU.md) lacks, into the git-ignored .device/
# to carry there: PyTorch's reference model and the nlohmann-json headers. See bench/gpu_session.sh.
gpu-carry:
	mkdir -p .device/nlohmann/include .device/nlohmann/share/cmake
	cp ../shared/bench/torch_ref.py .device/
	cp -r /usr/include/nlohmann .device/nlohmann/include/
	cp -r /usr/share/cmake/nlohmann_json .device/nlohmann/share/cmake/

clean:
	rm -rf $(BUILD)
