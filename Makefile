# causalrm: see README.md.
GO       ?= go
TAGS     ?= openblas
BIN      := bin/causalrm
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Go 1.26's simd/archsimd (AVX2 kernels for hot element loops, same bits as
# the scalar ones: nn/adam_simd.go). GOEXPERIMENT= builds without them.
export GOEXPERIMENT ?= simd

.PHONY: setup build test test-race test-purego vet bench bench-go demo clean image manifests validate-manifests fuzz fuzz-short reliability mutants

setup:
	scripts/setup.sh

build:
	$(GO) build -tags '$(TAGS)' -ldflags '-X main.version=$(VERSION)' -o $(BIN) ./cmd/causalrm

vet:
	$(GO) vet -tags '$(TAGS)' ./...

# The test command CI runs: the two builds (OpenBLAS + SIMD kernels, pure Go
# without them) train identical models, every package with the first, then
# the numerical packages again with the second (the exactness claims are per
# backend).
test: vet
	scripts/crossblas.sh
	$(GO) test -tags '$(TAGS)' -count=1 ./...
	GOEXPERIMENT= $(GO) test -count=1 ./nn/... ./trainer/...
	$(GO) test -race -count=1 ./nn/... ./trainer/... ./worker/...
	scripts/fuzz.sh 2000x
	$(MAKE) chaos-ci

# Hostile input (docs/reliability.md). Every fuzz target for FUZZTIME each
# (crashers land in testdata/fuzz/ and are replayed by go test from then on):
FUZZTIME ?= 10m
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

fuzz-short:
	scripts/fuzz.sh 2000x

# Regenerate the bad-input table of docs/reliability.md from its test.
reliability:
	CAUSALRM_WRITE_RELIABILITY=1 $(GO) test -tags '$(TAGS)' -count=1 -run TestBadInputTable ./cmd/causalrm

# 5,000 random byte mutants of a safetensors, a Parquet and a JSONL file.
MUTANT_SEED ?= 1
mutants:
	scripts/mutants.sh $(MUTANT_SEED)

# Fault injection (docs/chaos.md): a short matrix of every fault kind
# against a real job on 127.0.0.1; chaos.md, chaos.json, timeline.png in runs/chaos.
.PHONY: chaos
chaos: build
	$(BIN) chaos --runs 12 --seed 1 --out runs/chaos

# What CI runs on every change: 6 runs of randomly drawn faults, the seed
# taken from the commit (each change a new draw, every draw replayable with
# the seed it prints).
CHAOS_SEED ?= $(shell git rev-parse --short=7 HEAD 2>/dev/null | od -An -tu4 -N4 | tr -d ' ' || echo 1)
.PHONY: chaos-ci
chaos-ci: build
	rm -rf $${TMPDIR:-/tmp}/causalrm-chaos-ci
	timeout -k 10 900 $(BIN) chaos --runs 6 --seed $(CHAOS_SEED) --out $${TMPDIR:-/tmp}/causalrm-chaos-ci

# Everything under the race detector (pure-Go BLAS; collective takes ~1 min).
test-race:
	$(GO) test -race -count=1 ./...

test-purego:
	$(GO) test -count=1 ./...

# Go vs PyTorch on the paper's reward model (needs scripts/setup.sh --bench).
bench: build
	$(BIN) bench train

bench-go:
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchtime 20x ./nn/

demo: build
	$(BIN) simulate --rows 20000 --dim 256 --alpha 0.5 --rho01 0.1 --rho10 0.2 --out runs/data.safetensors --force
	$(BIN) train --data runs/data.safetensors --out runs/demo --force --progress-every 10

clean:
	rm -rf bin runs

# Kubernetes (docs/kubernetes.md). The image: static pure-Go binary on
# distroless, built with docker or podman from deploy/Dockerfile.
IMAGE    ?= causalrm:dev
OVERLAY  ?= deploy/kubernetes/overlays/example

image:
	@engine=$$(command -v docker || command -v podman) || { \
		echo "make image: needs docker or podman on the PATH (neither found); or build deploy/Dockerfile with another OCI builder" >&2; exit 1; }; \
	set -x; $$engine build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# The rendered, validated manifests of $(OVERLAY) (what kubectl apply -k applies).
manifests:
	$(GO) run ./deploy/cmd/manifests $(OVERLAY)

# Render every kustomization and validate it offline against the Kubernetes
# OpenAPI schemas in deploy/kubernetes/schemas; check every container flag
# against the binary (also part of make test, through go test ./...).
validate-manifests:
	$(GO) test -count=1 ./deploy/...

# Regenerate proto/collectivepb and proto/coordinatorpb from proto/*.proto. Tools used for the
# committed code: protoc 3.21.12 (Debian: apt-get install protobuf-compiler),
# protoc-gen-go v1.36.12 (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12),
# protoc-gen-go-grpc v1.5.1 (go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1).
.PHONY: proto
proto:
	PATH="$$(go env GOPATH)/bin:$$PATH" protoc -I proto \
		--go_out=proto/collectivepb --go_opt=paths=source_relative \
		--go-grpc_out=proto/collectivepb --go-grpc_opt=paths=source_relative \
		proto/collective.proto
	PATH="$$(go env GOPATH)/bin:$$PATH" protoc -I proto \
		--go_out=proto/coordinatorpb --go_opt=paths=source_relative \
		--go-grpc_out=proto/coordinatorpb --go-grpc_opt=paths=source_relative \
		proto/coordinator.proto
