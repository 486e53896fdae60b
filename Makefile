# Kiln: the two commands a newcomer needs.
#   make demo  - install what is needed, build, start a local farm, build the sample project end to end
#   make test  - install what the tests need and run them all
#   make acceptance - real upstream projects on every platform (long), writes ACCEPTANCE.md
GO ?= go
BIN := bin
PROGRAMS := metaserver buildserver startcompile webstatus
BUF := .tools/node_modules/@bufbuild/buf-linux-x64/bin/buf
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: all build setup demo test test-full unit proto-check lint fuzz bench clean acceptance acceptance-ci acceptance-repro release

all: build

# Static, as released (scripts/release.sh): the demo, the tests and the
# benchmarks run what users run.
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ $(addprefix ./,$(PROGRAMS))

setup:
	bash scripts/setup.sh

# Release artifacts in dist/: static binaries of the four programs for linux
# amd64, arm64, armv7, ppc64le, s390x and riscv64, Debian packages
# kiln-buildserver and kiln-metaserver for each, and SHA256SUMS.
# RELEASE_FLAGS="--arch amd64 --lint" narrows or lints (scripts/release.sh).
release:
	bash scripts/release.sh $(RELEASE_FLAGS)

demo: setup build
	bash scripts/demo.sh

# The full suite: protocol check, vet and the linters, the unit tests under
# the race detector, the end-to-end tests with the real programs, the
# acceptance suite's bounded subset (3 real projects x 3 platforms), then a
# short run of each fuzzer. The e2e bound has room for the release tests,
# which cross-build the volunteer's programs for five architectures
# (several minutes of CPU on a cold build cache).
test: setup proto-check lint
	$(GO) vet ./...
	$(GO) test -count=1 -race -timeout 20m $$($(GO) list ./... | grep -v /internal/e2e)
	KILN_RELEASE_ARCHES=s390x,armv7 $(GO) test -count=1 -timeout 30m ./internal/e2e/
	bash scripts/acceptance.sh --ci
	bash scripts/fuzz.sh 30000x

# Everything without CI's bounds: the release built and run for every
# foreign architecture, the whole acceptance suite (10 projects x 6
# platforms) and its reproducibility mode, and longer fuzz runs. About an
# hour and a half on two cores.
test-full: setup proto-check lint
	$(GO) vet ./...
	$(GO) test -count=1 -race -timeout 30m $$($(GO) list ./... | grep -v /internal/e2e)
	$(GO) test -count=1 -timeout 60m ./internal/e2e/
	bash scripts/acceptance.sh
	bash scripts/acceptance.sh --repro
	bash scripts/fuzz.sh 300000x

# Real upstream projects from Debian source packages on every platform
# (10 projects x 6 platforms; 11-25 min on 2 shared cores); writes ACCEPTANCE.md.
acceptance: setup
	bash scripts/acceptance.sh

# The bounded subset `make test` runs.
acceptance-ci: setup
	bash scripts/acceptance.sh --ci

# Reproducibility: every project built on two build servers (different data
# directories, host names, build uids), artifacts compared; writes its
# section of ACCEPTANCE.md (10 projects x native by default).
acceptance-repro: setup
	bash scripts/acceptance.sh --repro

proto-check:
	$(BUF) lint
	$(BUF) generate
	@git diff --exit-code -- proto || (echo "proto: generated code is stale; run '$(BUF) generate' and commit" && exit 1)
	@test -z "$$(git status --porcelain -- proto)" || (echo "proto: untracked generated files" && git status --porcelain -- proto && exit 1)

# golangci-lint with .golangci.yml (about a minute on two cores from a cold
# cache, seconds from a warm one).
lint:
	golangci-lint run ./...

fuzz:
	bash scripts/fuzz.sh 300000x

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

clean:
	rm -rf $(BIN) .demo .acceptance dist
