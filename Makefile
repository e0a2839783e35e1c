# natganker: `make demo` shows a failover in the local lab, `make test` proves the rest.
GO          ?= go
BIN         := bin
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
STATICCHECK := $(BIN)/staticcheck
STATICCHECK_VERSION := v0.8.2

.PHONY: all build dist deps demo test unit test-stress fuzz lint tidy-check bench bench-quick chaos clean

all: build

## build: the agent and the lab driver, version from git describe
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/natganker-agent ./cmd/natganker-agent
	$(GO) build -trimpath -o $(BIN)/natganker-lab ./lab/cmd/natganker-lab

## dist: static (CGO_ENABLED=0) linux/amd64 and linux/arm64 binaries and, built from them by
## the nfpm-based program in packaging/ (its own Go module), .deb and .rpm packages, in dist/
DIST        := dist
DIST_ARCHES := amd64 arm64
MAINTAINER  ?= natganker maintainers <maintainers@natganker.invalid>
dist:
	rm -rf $(DIST) && mkdir -p $(DIST)
	@for a in $(DIST_ARCHES); do echo "build linux/$$a"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o $(DIST)/natganker-agent-linux-$$a ./cmd/natganker-agent || exit 1; \
	done
	cd packaging && SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(GO) run . -version "$(VERSION)" \
		-dist ../$(DIST) -arch "$(DIST_ARCHES)" -maintainer "$(MAINTAINER)"

## deps: everything the lab and the tests need on a bare Debian machine (as root), Go included:
## the toolchain go.mod pins is fetched from the Go module proxy when no new enough go is found
deps:
	sh lab/gotoolchain.sh
	$(MAKE) --no-print-directory $(STATICCHECK)
	sh lab/deps.sh

$(STATICCHECK):
	GOBIN=$(CURDIR)/$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## demo: the local failover lab: hard-kill the owning NAT, watch the takeover and failback
demo: deps build
	$(BIN)/natganker-lab demo -agent $(BIN)/natganker-agent

## test: lint, tidy check, then every test with the race detector (moto, metadata mock and
## network-namespace lab tests included; the lab tests and the .deb install test need root)
test: lint tidy-check unit fuzz

unit:
	$(GO) test -race -count=1 -timeout 18m ./...
	cd packaging && $(GO) test -race -count=1 -timeout 10m ./...

## fuzz: every fuzz target for FUZZTIME (default 10s) on top of its seed corpus (testdata/fuzz);
## a crash fails the run and leaves the input in testdata/fuzz for a regression test
FUZZTIME ?= 10s
FUZZ_TARGETS := config:FuzzParse config:FuzzLoadKeyFile gossip:FuzzDecodeMeta \
	agent/control:FuzzServerRequest agent/control:FuzzClientAnswer ec2:FuzzLoadIdentity \
	agent/conntrack:FuzzDecode
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t#*:}; \
		echo "fuzz $$fn in ./$$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

## test-stress: the agent, gossip, ec2 and cmd tests five times over while a CPU hog keeps
## every core busy: a test that passes idle and fails under load is a defect
STRESS_COUNT ?= 5
test-stress:
	@hogs=""; for i in $$(seq $$(nproc)); do ( while :; do :; done ) & hogs="$$hogs $$!"; done; \
	trap 'kill $$hogs 2>/dev/null' EXIT INT TERM; \
	echo "CPU hog on $$(nproc) cores (pids$$hogs)"; \
	$(GO) test -race -count=$(STRESS_COUNT) -timeout 80m ./agent/... ./gossip/... ./ec2/... ./cmd/...

## lint: gofmt, go vet, staticcheck
lint: $(STATICCHECK)
	@fmt_out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$fmt_out" ]; then echo "gofmt would change:"; echo "$$fmt_out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	cd packaging && $(GO) vet ./... && $(CURDIR)/$(STATICCHECK) ./...

## tidy-check: fails when go.mod or go.sum (the agent's, or packaging/'s) are not tidy
tidy-check:
	@for d in . packaging; do \
		cp $$d/go.mod /tmp/natganker-go.mod.bak; cp $$d/go.sum /tmp/natganker-go.sum.bak; \
		(cd $$d && $(GO) mod tidy); \
		if ! cmp -s $$d/go.mod /tmp/natganker-go.mod.bak || ! cmp -s $$d/go.sum /tmp/natganker-go.sum.bak; then \
			echo "$$d/go.mod or go.sum is not tidy: run 'go mod tidy' in $$d and commit"; \
			cp /tmp/natganker-go.mod.bak $$d/go.mod; cp /tmp/natganker-go.sum.bak $$d/go.sum; exit 1; fi; \
	done

## bench: every benchmark in one go, into one report: the takeover of 1 to 200 route tables
## at EC2's rate limit, the idle footprint for 2, 4 and 8 members, and the lab's hard kills,
## spot handoffs, loss soaks (5/10/20%) and stall soak, natganker beside keepalived. Writes
## lab/results/report-<time>.md from the parts and puts it in the README's measured section.
## BENCH_ARGS adds flags to natganker-lab bench. Takes about two and a half hours.
bench: deps build
	@set -e; stamp=$$(date -u +%Y%m%dT%H%M%SZ); res=$(CURDIR)/lab/results; mkdir -p $$res; \
	echo "== route tables at EC2's rate limit"; \
	NATGANKER_SWEEP_OUT=$$res/sweep-$$stamp $(GO) test -run '^$$' -bench TableSweep -benchtime 1x -timeout 90m ./ec2/; \
	echo "== idle footprint"; \
	NATGANKER_FOOTPRINT_OUT=$$res/footprint-$$stamp $(GO) test -run '^$$' -bench Footprint -benchtime 1x -timeout 60m ./agent/; \
	echo "== the lab, natganker beside keepalived"; \
	$(BIN)/natganker-lab bench -agent $(BIN)/natganker-agent -out $$res -stamp $$stamp $(BENCH_ARGS); \
	$(BIN)/natganker-lab report -dir $$res -stamp $$stamp -readme README.md \
		-command "make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')"

## bench-quick: the same with fewer runs and short soaks, for a quick look
bench-quick: deps build
	$(BIN)/natganker-lab bench -agent $(BIN)/natganker-agent -runs 5 -soak 1m -stall 1m

## chaos: MINUTES (default 10) of random faults in the lab, judged by a referee independent of
## the agent; results under lab/results/chaos-<time>.*. SEED=n replays a run's draws.
MINUTES ?= 10
chaos: deps build
	$(BIN)/natganker-lab chaos -agent $(BIN)/natganker-agent -minutes $(MINUTES) $(if $(SEED),-seed $(SEED))

clean:
	rm -rf $(BIN)
