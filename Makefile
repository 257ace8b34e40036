# Top-level entry points: `make demo` and `make test` (README). Both install dependencies first.
BUILD ?= build
JOBS  ?= $(shell nproc)
# Debian packages the build and tests need. python3-torch is only for regenerating golden files;
# sentencepiece (spm_train/spm_encode/spm_decode) lets the tests also compare with SentencePiece
# live, beside the committed golden ids (tests/golden/sentencepiece). gnuplot-nox draws `moe plot`.
# libboost-dev has Boost.Beast (`moe serve`); chromium and chromium-driver run its page's browser test.
# libdnnl-dev (oneDNN) runs precision bf16 on the CPU's AVX512-BF16 instructions (framework/bf16_gemm.cpp).
DEB_PKGS := build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev \
            libyaml-cpp-dev libboost-dev libgtest-dev libopenblas-dev libopenblas0-pthread libdnnl-dev \
            nlohmann-json3-dev zlib1g-dev libzstd-dev libsentencepiece-dev sentencepiece gnuplot-nox \
            chromium chromium-driver

.PHONY: deps build test unit demo clean golden gpu-carry

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
