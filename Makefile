# cdswap: durable CD-ROM medium changes for Xen guests, as Temporal workflows.
# `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cdswap
# The pinned tool versions, in one place for make, the scripts and Go.
include internal/versions/versions.env
WORKFLOWCHECK := go.temporal.io/sdk/contrib/tools/workflowcheck@$(WORKFLOWCHECK_VERSION)
TEMPORAL_CLI ?= $(CACHE)/bin/temporal-$(TEMPORAL_CLI_VERSION)/temporal
GOLANGCI_LINT := $(CACHE)/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
DEADCODE := $(CACHE)/bin/deadcode-$(DEADCODE_VERSION)/deadcode
# Tests that run only when asked (reports and recorders with their own make targets, and a
# helper process another test starts): make test leaves them out rather than see them skip.
ON_DEMAND_TESTS := ^Test(SwapLatencyReport|FdsetPollLoadReport|FleetThroughputReport|ClusterLatencyReport|RecordHistories|RecordHistoriesEveryPath|LockHelperProcess)$$
# Packages the product binaries must never link: the simulator and the test doubles.
TEST_ONLY_PACKAGES := /internal/xensim|/qmptest|/xenstored|/internal/testenv
export CDSWAP_TEMPORAL_CLI := $(TEMPORAL_CLI)
export CDSWAP_CACHE := $(CACHE)

# Native fuzz targets run briefly in `make test` (package:Target).
FUZZ_TARGETS := \
	./internal/xs:FuzzDecodeMsg \
	./internal/xs:FuzzParsePerms \
	./internal/xs/xenstored:FuzzConn \
	./internal/qmp:FuzzParseMessage \
	./internal/qmp/qmptest:FuzzStreamer \
	./internal/xen:FuzzParseVdev \
	./internal/mediaformat:FuzzDetect \
	./internal/termtext:FuzzEscape \
	./workflows:FuzzJSONSize
FUZZ_TIME ?= 4s

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-17s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install Debian's qemu-system-x86 and xenstore-utils (as root) and build the Temporal CLI once
	@./scripts/deps.sh --temporal >/dev/null

.PHONY: deps-cluster
deps-cluster: ## Also install PostgreSQL and docker-compose (as root) and build the Temporal server, SQL tool and Web UI once
	@./scripts/deps.sh --temporal --cluster >/dev/null

.PHONY: cluster
cluster: deps-cluster ## Run a real Temporal cluster here (PostgreSQL, 4 services, archival, UI) until Ctrl-C; state in .cluster/
	./scripts/cluster.sh up

.PHONY: cluster-stop
cluster-stop: ## Stop the cluster `make cluster` started
	./scripts/cluster.sh down

.PHONY: test-cluster
test-cluster: deps-cluster ## Run the cluster test: swaps on 3 hosts, faults (history, matching, PostgreSQL, workers), archival
	$(GO) test -race -count=1 -timeout 10m -run '^TestCluster(|DynamicConfig|ComposeFile)$$' -v ./integration

.PHONY: deploy-check
deploy-check: ## Validate docker-compose.temporal.yml (docker-compose config, no engine needed) and the systemd unit
	@if command -v docker-compose >/dev/null; then \
	  docker-compose -f docker-compose.temporal.yml config -q && echo "docker-compose.temporal.yml: valid"; \
	elif [ "$$CI" = true ]; then \
	  echo "docker-compose is missing (make deps-cluster installs it)" >&2; exit 1; \
	else \
	  echo "docker-compose.temporal.yml not checked: no docker-compose (make deps-cluster installs it)"; \
	fi
	@if command -v systemd-analyze >/dev/null; then \
	  d=$$(mktemp -d) && cp deploy/cdswap-worker.env.example $$d/cdswap-worker.env && \
	  sed -e "s|/usr/local/bin/cdswap-worker|/bin/true|" -e "s|/etc/cdswap/cdswap-worker.env|$$d/cdswap-worker.env|" \
	    deploy/cdswap-worker.service >$$d/cdswap-worker.service && \
	  out=$$(systemd-analyze verify $$d/cdswap-worker.service 2>&1); rm -rf $$d; \
	  if [ -n "$$out" ]; then echo "deploy/cdswap-worker.service: $$out" >&2; exit 1; fi; \
	  echo "deploy/cdswap-worker.service: valid"; \
	fi

.PHONY: build
build: ## Build the binaries into bin/ (cdswap, cdswap-worker, xensim)
	$(GO) build -o bin/cdswap ./starter
	$(GO) build -o bin/cdswap-worker ./worker
	$(GO) build -o bin/xensim ./xensim

# Under CI=true the suite includes the cluster test (integration TestCluster), which must not
# skip: build what it needs first.
TEST_DEPS := deps $(if $(filter true,$(CI)),deps-cluster)

.PHONY: test
test: $(TEST_DEPS) lint deploy-check ## Run the linters, the whole suite with -race (the cluster test too under CI=true), and a short run of every fuzz target
	$(GO) test -race -count=1 -timeout 12m -skip '$(ON_DEMAND_TESTS)' ./...
	@for ft in $(FUZZ_TARGETS); do \
	  pkg=$${ft%%:*}; target=$${ft##*:}; \
	  echo "fuzz $$pkg $$target ($(FUZZ_TIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZ_TIME) $$pkg >/dev/null || exit 1; \
	done

.PHONY: test-fleet-large
test-fleet-large: deps ## The fleet at full scale: a 1,000-drive batch over 10 xensim hosts, checked drive by drive (make test runs 200)
	$(GO) test -race -count=1 -timeout 20m -run '^TestFleetScale$$' -v ./integration -args -fleet-drives 1000

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZ_TIME (default here 1m)
	@for ft in $(FUZZ_TARGETS); do \
	  pkg=$${ft%%:*}; target=$${ft##*:}; \
	  $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(or $(FUZZ_LONG),1m) $$pkg || exit 1; \
	done

.PHONY: bench
bench: deps ## Run the benchmarks (protocols, end-to-end swap)
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: histories
histories: deps ## Re-record workflows/testdata/histories from real runs on the dev server
	$(GO) test ./integration -run TestRecordHistories -count=1 -args -record

.PHONY: bench-report
bench-report: deps ## 50 swaps in each mode (old way, each lever, new way, direct), side by side (the tables in BENCHMARKS.md)
	$(GO) test ./integration -run TestSwapLatencyReport -count=1 -v -args -report -swaps 50

.PHONY: bench-cluster
bench-cluster: deps-cluster ## Single swaps and bursts on the dev server, then on make cluster's cluster (the table in BENCHMARKS.md)
	$(GO) test ./integration -run TestClusterLatencyReport -count=1 -v -args -report -swaps 50

.PHONY: bench-fleet
bench-fleet: deps ## Fleet throughput: drives/s over 1, 5 and 10 hosts at two pairs of limits, with where the CPU goes (the table in BENCHMARKS.md)
	$(GO) test ./integration -run '^TestFleetThroughputReport$$' -count=1 -timeout 30m -v -args -report

.PHONY: lint
lint: ## gofmt, vet, golangci-lint, workflowcheck, go mod tidy, deadcode, and no test-only package in a product binary
	@./scripts/deps.sh --lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "lint: not gofmt'ed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	$(GO) run $(WORKFLOWCHECK) ./workflows/...
	@$(GO) mod tidy -diff || { echo "lint: go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@out=$$($(DEADCODE) -test ./...); test -z "$$out" || { echo "lint: unreachable functions (remove them):"; echo "$$out"; exit 1; }
	@bad=$$($(GO) list -deps ./worker ./starter | grep -E '$(TEST_ONLY_PACKAGES)' || true); \
	  test -z "$$bad" || { echo "lint: cdswap or cdswap-worker links a simulator or test-double package:"; echo "$$bad"; exit 1; }

.PHONY: demo
demo: deps $(if $(filter 1,$(CDSWAP_CLUSTER)),deps-cluster) ## Run the main job end to end on a simulated Xen host (see README); CDSWAP_CLUSTER=1 on make cluster's cluster
	./scripts/demo.sh
