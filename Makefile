# losscape — quick start: `make run` (the main job on the bundled models and data) and
# `make test`. Both first install the system libraries they need on Debian/Ubuntu.

SHELL := /bin/bash
CARGO ?= cargo
# Older OpenBLAS builds miscompute on some CPUs unless told the core type; keep any value
# the environment sets, default to Haswell.
export OPENBLAS_CORETYPE ?= Haswell

APT_PACKAGES := build-essential pkg-config libopenblas-dev libhdf5-dev openmpi-bin libopenmpi-dev clang libclang-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := target/release/losscape
# MPI (rsmpi over the system's OpenMPI): `mpirun -n N losscape …`; without it, one process
FEATURES := --features mpi

.PHONY: all deps build run check-report images test bench fixtures lint fmt clean fuzz fuzz-seeds

all: build

## Install missing system packages (BLAS/LAPACK, HDF5, OpenMPI, clang for the MPI bindings,
## a C toolchain, pkg-config).
deps:
	@if ! command -v cc >/dev/null || ! command -v pkg-config >/dev/null \
	    || ! pkg-config --exists openblas || ! pkg-config --exists hdf5 \
	    || ! command -v mpirun >/dev/null || ! pkg-config --exists ompi \
	    || ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
	  echo "installing system packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y $(APT_PACKAGES); \
	fi

build: deps
	$(CARGO) build --release --locked $(FEATURES)

## The main job: residual vs plain ResNets (depth 20 and 56) and the depth-8 pre-LN ViT with and
## without residual connections, on digits → outputs/residual-vs-plain/.
run: build
	$(BIN) run analyses/residual-vs-plain.toml

## Screenshot the main job's report.html with headless Chromium (installs chromium if missing).
check-report: run
	@command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --window-size=1280,2200 \
	  --screenshot=$(CURDIR)/outputs/residual-vs-plain/report-screenshot.png \
	  file://$(CURDIR)/outputs/residual-vs-plain/report.html
	@echo "screenshot: outputs/residual-vs-plain/report-screenshot.png"

## Regenerate the README's example images from the main job's, the MLP and the curvature analyses.
images: build
	$(BIN) run analyses/mlp-mnist1d.toml -q > /dev/null
	$(BIN) run analyses/residual-vs-plain.toml -q > /dev/null
	$(BIN) plot outputs/residual-vs-plain/ResNet-20.surface.h5 outputs/residual-vs-plain/ResNet-20-noshort.surface.h5 --kind panel --out docs/images/resnet20-panel.png
	$(BIN) plot outputs/residual-vs-plain/ResNet-20-noshort.surface.h5 --kind surface3d --width 640 --height 560 --out docs/images/resnet20-noshort-surface3d.png
	$(BIN) plot outputs/mlp-mnist1d/MLP-residual.surface.h5 --kind curve --width 640 --height 420 --out docs/images/mlp-residual-curve.png
	$(BIN) run analyses/curvature.toml -q > /dev/null
	cp outputs/curvature/eigen-surfaces.png docs/images/resnet20-ggn-eigen-panel.png
	cp outputs/curvature/ResNet-20-noshort.spectrum.png docs/images/resnet20-noshort-ggn-blocks.png

## All tests (unit, integration, PyTorch reference fixtures, CLI, mpirun -n 3 vs one process).
test: deps
	$(CARGO) test --release --locked $(FEATURES)

## Mutation fuzzing of every file reader (time-bounded: FUZZ_SECONDS, default 600) over the
## seeds in tests/fuzz-corpus/; failing inputs go to outputs/fuzz/failures/.
FUZZ_SECONDS ?= 600
fuzz: deps
	$(CARGO) build --release --locked --features fuzz --bin losscape-fuzz
	nice -n 10 target/release/losscape-fuzz --seconds $(FUZZ_SECONDS)

## Regenerate the fuzz seeds (small files of every format) in tests/fuzz-corpus/.
fuzz-seeds: build
	tests/fuzz-corpus/make-seeds.sh
	$(CARGO) run --release --locked --features fuzz --bin losscape-fuzz -- --write-seeds

## Speed: forward / gradient / H·v of ResNet-20 and -56 at 1 and 2 threads.
bench: build
	$(BIN) bench

## Regenerate data, bundled models and PyTorch reference values (needs torch; see fixtures/generate).
fixtures:
	fixtures/generate/regenerate.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets --locked $(FEATURES) -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
