# nebula-credential: Vault secrets engine plugin.
#
#   make build   build the plugin into bin/
#   make dev     run a Vault dev server with the plugin mounted at nebula/
#   make test    what CI runs: vet, fuzz, unit and acceptance tests (race),
#                the acceptance tests against Vault and against OpenBao
#   make test-openbao  the acceptance tests against OpenBao only
#   make bench   benchmarks
#
# VERSION is stamped into the plugin (-X main.version) and is the version
# Vault registers it under, so it must be a semantic version: a tag from
# git describe as it is, otherwise v0.1.0-dev (+ the commit as build
# metadata).

SHELL := bash
GO ?= go
PLUGIN := nebula-credential-plugin
BIN := bin

GIT_DESCRIBE := $(shell git describe --tags --always --dirty 2>/dev/null)
VERSION ?= $(if $(filter v%,$(GIT_DESCRIBE)),$(GIT_DESCRIBE),v0.1.0-dev$(if $(GIT_DESCRIBE),+$(GIT_DESCRIBE)))
LDFLAGS := -X main.version=$(VERSION)

# Fuzz budgets are execution counts, not durations: with a duration, Go
# 1.26's fuzz coordinator can report "context deadline exceeded" when the
# time runs out mid-execution (golang/go#75804, fixed in Go 1.27), a
# failure without a crasher. The counts take about 20 s and 10 s here.
FUZZTIME ?= 50000x
FUZZTIME_WEBHOOK ?= 40000x

.PHONY: all build dev vault openbao tools test test-openbao fuzz bench bench-scale fmt vet clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/$(PLUGIN) ./cmd/$(PLUGIN)

dev:
	VERSION='$(VERSION)' scripts/dev.sh

# vault finds or builds the Vault binary the acceptance tests run (cached
# outside the checkout; see scripts/install-vault.sh).
vault:
	@scripts/install-vault.sh

# openbao finds or builds the OpenBao binary (bao) the acceptance tests run
# against with NEBULA_TEST_HOST=openbao: OPENBAO_BIN, `bao` on PATH, or a
# build of OpenBao 2.6.2 from its source archive, cached outside the
# checkout (see scripts/install-openbao.sh).
openbao:
	@scripts/install-openbao.sh

# test runs every package against Vault, then the host-dependent ones (the
# acceptance tests and the harness's own) against OpenBao; the rest does not
# depend on the host and runs once.
test: vault openbao tools vet fuzz
	VAULT_BIN="$$(scripts/install-vault.sh)" $(GO) test -race -timeout 30m ./...
	$(MAKE) --no-print-directory test-openbao

# test-openbao runs the acceptance tests (and the harness's own tests)
# against OpenBao, building it on first use.
OPENBAO_PACKAGES := ./test/harness/ ./test/acceptance/
test-openbao: openbao tools
	NEBULA_TEST_HOST=openbao OPENBAO_BIN="$$(scripts/install-openbao.sh)" $(GO) test -race -timeout 30m $(OPENBAO_PACKAGES)

# tools installs what tests need beyond Go and Vault: pdftotext (Debian's
# poppler-utils) reads the PDF audit exports back; prometheus (Debian's
# prometheus package, /usr/bin/prometheus) scrapes the engine in the
# acceptance tests, which start their own on loopback. The package's
# service is not needed: without systemd invoke-rc.d finds no runlevel and
# starts nothing; with systemd it may start one on :9090, which the tests
# do not use.
tools:
	@command -v pdftotext >/dev/null || { apt-get update -qq && apt-get install -y -qq poppler-utils >/dev/null; }
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzCredentialInput$$' -fuzztime=$(FUZZTIME) .
	$(GO) test -run='^$$' -fuzz='^FuzzWebhookAnswer$$' -fuzztime=$(FUZZTIME_WEBHOOK) .

# bench runs the engine's Go benchmarks (BenchmarkTokenRead,
# BenchmarkRefreshDue), then bench-vault. About 2 to 3 minutes.
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=2s .
	$(MAKE) --no-print-directory bench-vault

# bench-vault measures token reads through a real Vault dev server:
# nebula/token/<name> against a no-op plugin (test/noopplugin), interleaved
# rounds, requests/s, p50/p99 and the ratio nebula/noop (target >= 0.9).
bench-vault: vault
	VAULT_BIN="$$(scripts/install-vault.sh)" $(GO) run ./test/benchvault

# bench-scale measures the engine at scale through a real Vault dev server
# (test/benchscale): batch/create fill rate, health and metrics p50/p99 at
# 100, 10,000 and 100,000 credentials, random token reads across 100,000
# names against the no-op plugin, plugin RSS, reload-to-first-read, and a
# refresh of 1,000 due oauth2 tokens against a 100 ms loopback endpoint.
# Under 10 minutes; ARGS='-max 2000 -refresh 100' for a quick run.
bench-scale: vault
	VAULT_BIN="$$(scripts/install-vault.sh)" $(GO) run ./test/benchscale $(ARGS)

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN) dist
