# Herald — the two commands a new machine needs:
#   make run    install and start the gateway (memory bus, demo page) on 127.0.0.1:8000
#   make test   install what the tests need and run every test
SHELL := /bin/bash
.DEFAULT_GOAL := help
HOST ?= 127.0.0.1
PORT ?= 8000
EXAMPLE_PORT ?= 8080

.PHONY: help run example test install install-test check types bench bench-quick bench-peers bench-peers-quick reliability clean

help:
	@echo "make run     - start Herald with the demo on http://$(HOST):$(PORT)/"
	@echo "make example - the AI Writer example (FastAPI, SQLAlchemy, the outbox, React) on http://$(HOST):$(EXAMPLE_PORT)/"
	@echo "make test    - install test dependencies and run every test"
	@echo "make check   - formatting, lint, types, layer contracts"
	@echo "make bench   - benchmarks against the baselines (bench-quick: a few minutes)"
	@echo "make bench-peers - Herald beside Centrifugo, both engines, 1 and 2 cores (bench-peers-quick: minutes)"
	@echo "make reliability - faults, fuzzing, isolation, abuse and the one-hour soak (docs/reliability.md)"

install:
	@scripts/bootstrap.sh

run: install
	.venv/bin/herald serve --demo --host $(HOST) --port $(PORT)

# examples/ai-writer/README.md
example:
	@examples/ai-writer/install.sh
	.venv/bin/python examples/ai-writer/run.py --host $(HOST) --port $(EXAMPLE_PORT)

install-test:
	@scripts/install-system-deps.sh
	@HERALD_EXTRAS=test scripts/bootstrap.sh
	@scripts/install-browser-deps.sh
	@examples/ai-writer/install.sh
	@scripts/install-kafka.sh
	@scripts/install-promtool.sh >/dev/null
	@scripts/install-deploy-tools.sh >/dev/null

test: install-test
	@scripts/test.sh

# The reliability suite in full (about an hour); make test runs it in quick mode.
reliability: install-test
	@HERALD_EXTRAS=test,bench scripts/bootstrap.sh
	@scripts/reliability.sh

bench:
	@HERALD_EXTRAS=test,bench scripts/bootstrap.sh
	.venv/bin/python -m bench --repeat 2

bench-quick:
	@HERALD_EXTRAS=test,bench scripts/bootstrap.sh
	.venv/bin/python -m bench --quick

# Herald beside Centrifugo (built from its Go module, scripts/install-centrifugo.sh) and the
# ceiling, on the memory and Redis engines: docs/benchmarks.md, "Against Centrifugo".
PEERS := herald,centrifugo,ceiling

bench-peers:
	@scripts/install-system-deps.sh redis-server
	@HERALD_EXTRAS=test,bench scripts/bootstrap.sh
	.venv/bin/python -m bench --servers $(PEERS)

bench-peers-quick:
	@scripts/install-system-deps.sh redis-server
	@HERALD_EXTRAS=test,bench scripts/bootstrap.sh
	.venv/bin/python -m bench --servers $(PEERS) --quick

# The browser client's event types and bundles, and the producer SDK's models, from the payload models.
types:
	@HERALD_EXTRAS=test scripts/bootstrap.sh
	.venv/bin/herald schema --typescript --output clients/js/packages/client/src/generated/events.ts
	.venv/bin/python clients/python/scripts/generate_models.py
	@scripts/install-browser-deps.sh
	cd clients/js && npm run build

check:
	@HERALD_EXTRAS=test scripts/bootstrap.sh
	@scripts/check.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis artifacts clients/js/node_modules
