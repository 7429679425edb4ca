# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast lint check compare compare-external clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

SOURCES = setup.py pyproject.toml README.rst $(shell find kubernetai twisted -name '*.py' 2>/dev/null)

$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet '.[test,lint]'
	touch $(STAMP)

# The built-in demo: no cluster needed; listens on 127.0.0.1:1053 (udp+tcp).
demo: $(STAMP)
	@echo
	@echo "kubernetai demo on 127.0.0.1 port 1053 (udp+tcp): clusters 'east' and 'west' from etc/demo/."
	@echo "In another terminal try:"
	@echo "  dig @127.0.0.1 -p 1053 web.default.svc.cluster.local        # from east (dual-stack ClusterIP)"
	@echo "  dig @127.0.0.1 -p 1053 ledger.payments.svc.cluster.local +tcp   # only in west: falls through"
	@echo "  dig @127.0.0.1 -p 1053 api.default.svc.cluster.local        # no ready endpoint in east: west answers"
	@echo "  curl -s 127.0.0.1:9153/metrics | grep kubernetai_cluster   # Prometheus metrics, per cluster"
	@echo "  curl -s 127.0.0.1:8181/status                               # each cluster's state, as JSON"
	@echo "Edit etc/demo/*.yaml while it runs: changes apply within a second.  Ctrl-C stops it."
	@echo
	cd etc/demo && ../../$(BIN)/twistd --pidfile= -n kubernetai --config Corefile

# Style and types gate the tests: CI runs `make test`, so it enforces them.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Everything but the end-to-end tests on real sockets (marker e2e): seconds, for the edit loop.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not e2e"

# Development tool, not part of `make test`: our answers against the Go kubernetai's
# (CoreDNS + the kubernetai plugin, newest CoreDNS) on seeded random clusters.
# Needs ../shared (its tools and the Go kubernetai's source) and Go; see README.rst.
SHARED ?= ../shared
SEED_BIN ?= $(HOME)/.cache/kubernetai-seed
SEEDS ?= 1-100
REFERENCE ?= coredns-kubernetai-cur
compare: $(STAMP)
	@test -f $(SHARED)/tools/differential.py || { echo "make compare: $(SHARED)/tools not found (set SHARED=...)"; exit 2; }
	@test -x $(SEED_BIN)/$(REFERENCE) || bash $(SHARED)/seed/build.sh $(SEED_BIN)
	$(BIN)/python $(SHARED)/tools/differential.py --venv $(VENV) --cmd-b "$(SEED_BIN)/$(REFERENCE) -conf" \
	    --seeds $(SEEDS) --time-budget 3600 --out build/compare/$(REFERENCE) --json build/compare/$(REFERENCE).json

# Development tool, not part of `make test`: our k8s_external against plain CoreDNS 1.15's
# (kubernetes + k8s_external), built from the Go module cache; needs ../shared/tools/fakekube.py and Go.
COREDNS_PLAIN ?= $(SEED_BIN)/coredns-plain-1.15
compare-external: $(STAMP)
	@test -f $(SHARED)/tools/fakekube.py || { echo "make compare-external: $(SHARED)/tools not found (set SHARED=...)"; exit 2; }
	@test -x $(COREDNS_PLAIN) || (cd $$(go env GOMODCACHE)/github.com/coredns/coredns@v1.15.0 && GOFLAGS=-mod=mod go build -o $(COREDNS_PLAIN) .)
	$(BIN)/python tests/compare_external.py --coredns $(COREDNS_PLAIN) --fakekube $(SHARED)/tools/fakekube.py

check: $(STAMP)
	$(BIN)/twistd --pidfile= -n kubernetai --config etc/Corefile.example --check

clean:
	rm -rf $(VENV) build *.egg-info
