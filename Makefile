# Conduit's everyday commands. Everything installs itself into .venv from the pinned lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test files run on this many processes (each leases its own Redis database; PostgreSQL databases are per test).
# Three on two cores: many tests wait on processes and timers (4:56 against 5:55 for two, 2026-12-07).
TEST_PROCESSES ?= 3
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test lint format bench lock clean stop-servers image-test test-aiohttp-next browser

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

## Start the whole suite (Redis/PostgreSQL, demo third party, proxy, worker, scheduler) until Ctrl-C.
run: install
	$(BIN)/python -m devtools.run

## Every test, against real Redis/PostgreSQL (throwaway servers are started where none answers).
test: install browser
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

## The image built with buildah from local Debian bases and every service run from it (root; minutes).
## Needs buildah, podman and debootstrap: deploy/install-image-tools.sh installs them.
image-test: install browser
	CONDUIT_IMAGE_TEST=1 $(BIN)/python -m pytest tests/image

## The proxy's tests on the next aiohttp minor release, where PyPI has one (the proxy relies on private
## aiohttp members: services/auth_proxy/transport/aiohttp_private.py). Says so and passes where there is none.
test-aiohttp-next: install
	$(BIN)/python -m devtools.aiohttp_next

## Debian's chromium for the console's browser tests (Playwright drives it; no browser download).
## Installed with apt-get when missing and we are root; elsewhere those tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium missing and not root: the console's browser tests will be skipped (apt-get install chromium)"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Benchmarks (not tests): figures go to docs/benchmarks.md.
bench: install
	$(BIN)/python -m bench

## Re-pin dependencies after editing pyproject.toml.
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -c requirements.lock -o requirements-runtime.lock

stop-servers: install
	$(BIN)/python -m devtools.servers stop --state-dir .run/servers
	$(BIN)/python -m devtools.servers stop --state-dir .run/test-servers

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
