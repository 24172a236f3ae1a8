GO ?= go
BIN := bin/boxoffice

.PHONY: all build demo grpcurl test fuzz generate bench vet clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/boxoffice

## demo: start a private PostgreSQL and a node, run a short scenario, keep serving.
demo: build
	./$(BIN) demo

## grpcurl: install grpcurl into bin/ to try the API by hand (README shows the calls).
GRPCURL_VERSION ?= v1.9.3
grpcurl:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

## test: vet, every test with the race detector, the tests whose latency bounds
## only hold without it, and a short fuzz run. The fuzz run is bounded by a count
## of executions, not a duration: Go 1.26's fuzz coordinator can report a spurious
## "context deadline exceeded" when a duration ends while a worker is busy
## (golang/go#75804, fixed in Go 1.27).
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -count=1 -run '^TestUnknownShowFlood$$' ./engine
	$(MAKE) fuzz FUZZTIME=30000x

FUZZTIME ?= 60s
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzHold -fuzztime=$(FUZZTIME) ./activereservation

vet:
	@test -z "$$(gofmt -l .)" || (gofmt -l . && echo "gofmt needed on the files above" && exit 1)
	$(GO) vet ./...

## generate: regenerate the gRPC code from api/boxoffice/v1/*.proto (offline; buf is pinned in tools/go.mod).
generate:
	$(GO) tool -modfile=tools/go.mod buf lint
	$(GO) tool -modfile=tools/go.mod buf generate

## bench: the Go benchmarks (in-memory decisions, seat maps, end-to-end holds over gRPC against PostgreSQL).
BENCHTIME ?= 1s
BENCHCOUNT ?= 5
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) ./internal/ordmap ./activereservation ./waitinguser ./persistence ./engine

## bench-profile: a CPU profile of BenchmarkHoldSeatsGRPC (client, server and writer, not PostgreSQL) in
## bin/holds.cpu.pprof, and its top entries by cumulative time. A fixed count of attempts keeps the
## set-up (the first run starts PostgreSQL) a small part of the profile.
PROFILETIME ?= 100000x
.PHONY: bench-profile
bench-profile:
	@mkdir -p bin
	$(GO) test -run='^$$' -bench='^BenchmarkHoldSeatsGRPC$$/^callers=256$$' -benchtime=$(PROFILETIME) -count=1 -o bin/engine.test -cpuprofile=bin/holds.cpu.pprof ./engine
	$(GO) tool pprof -top -cum bin/engine.test bin/holds.cpu.pprof | head -50

## bench-sale: the default flash sale (200,000 users, 15,000 seats) against a fresh local engine;
## the report goes to bench-results/sale/index.html.
.PHONY: bench-sale bench-compare
bench-sale: build
	./$(BIN) bench --out bench-results/sale

## bench-compare: the same sale against boxoffice, pg-status, redis-setnx and redis-rueidis, 3 rounds,
## with ratios (bench-results/compare/compare.json).
## bench-storm: the hold storm (each of 200,000 users makes one hold attempt, 256 in flight) against
## boxoffice, the engine called with unary RPCs, and the two Redis designs, 3 rounds.
.PHONY: bench-storm
bench-compare: build
	./$(BIN) bench compare --rounds 3 --out bench-results/compare

bench-storm: build
	./$(BIN) bench compare --scenario hold-storm --concurrency 256 --rounds 3 \
		--target boxoffice,boxoffice-unary,redis-setnx,redis-rueidis --out bench-results/storm

## bench-onsale: the on-sale (200,000 users arriving over 20 s) behind a waiting room admitting 2,000 a
## second, then the same crowd let in without a room.
.PHONY: bench-onsale
bench-onsale: build
	./$(BIN) bench --scenario on-sale --out bench-results/onsale
	./$(BIN) bench --scenario on-sale --no-room --out bench-results/onsale-noroom

clean:
	rm -rf bin
