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

## test: vet, every test with the race detector, and a short fuzz run.
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) fuzz FUZZTIME=15s

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
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) ./internal/ordmap ./activereservation ./engine

clean:
	rm -rf bin
