# The two commands: `make run` and `make test`. Everything else is a step they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/lib/chromium/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check
LOCK_VENV := .venv-lock

.PHONY: run test bench operator-effort screenshots lint install install-test lock lock-check chromium clean-venv

## make install: the run environment, exactly as locked (requirements/run.lock: every package pinned with its
## hashes, binary wheels only), then the product itself, built by the locked backend. A changed lock or
## pyproject.toml builds the environment anew, so nothing stays installed that the lock does not name.
## --no-deps: the lock is the whole resolution (pip 23 would otherwise look for the newest release of a
## dependency named with an extra, such as weasyprint's fonttools[woff], and refuse it); pip check then
## proves every installed package's requirements are met.
LOCKED_INSTALL := $(PIP_INSTALL) --no-deps --require-hashes --only-binary :all:
$(BIN)/.installed-run: requirements/run.lock pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(LOCKED_INSTALL) -r requirements/run.lock
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

## make install-test: and the test extra, from requirements/test.lock (the same versions, plus the test tools)
$(BIN)/.installed-test: requirements/test.lock $(BIN)/.installed-run
	$(LOCKED_INSTALL) -r requirements/test.lock
	$(BIN)/python -m pip check
	touch $@

install: $(BIN)/.installed-run
install-test: $(BIN)/.installed-test

## make lock: regenerate requirements/*.lock from pyproject.toml with the pinned uv (requirements/tools.lock),
## keeping every version pyproject.toml still allows; `make lock UPGRADE=1` takes the newest releases.
## The one way to change what is installed; run `make test` after it.
lock:
	[ -x $(LOCK_VENV)/bin/python ] || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		--only-binary :all: -r requirements/tools.lock
	$(LOCK_VENV)/bin/python requirements/lock.py $(if $(UPGRADE),--upgrade)

## make lock-check: does the lock agree with pyproject.toml? (standard library only: runs before installing)
lock-check:
	$(PYTHON) requirements/lock.py --check

## make run: set up instance/ (idempotent: keeps data and keys) and serve on 127.0.0.1:$(PORT) (default 5000;
## `make run PORT=5001` serves on another port)
PORT ?= 5000
run: install
	$(BIN)/flask --app mfg init --demo
	$(BIN)/gunicorn --workers 2 --threads 4 --bind 127.0.0.1:$(PORT) --access-logfile - 'mfg:create_app()'

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi

## make test: install what the tests need and run the whole suite
test: install-test chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff (lint and import order) and mypy (strict on mfg/domain), both must be clean; .ci/run runs it
## before the suite
lint: install-test
	$(BIN)/ruff check mfg tests bench tools requirements
	$(BIN)/mypy

## make bench: run bench/ (SQLite, and PostgreSQL when MFG_BENCH_DATABASE_URL or MFG_TEST_DATABASE_URL is set);
## writes bench/out/report.md and bench/out/report.json. BENCH_ARGS=--quick tries the harness at small sizes.
bench: install-test
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## make operator-effort: one complete demo NK batch done by the two operators through the screens (Debian's
## chromium at 1024x768 with touch, a throwaway demo instance on a free loopback port); counts page loads, taps,
## typed fields, scans, password entries and seconds into $(OUT).json and $(OUT).md
## (`make operator-effort OUT=docs/operator-effort-after` after a change to the screens)
OUT ?= bench/out/operator-effort
operator-effort: install-test chromium
	$(BIN)/python tools/operator_effort.py --out $(OUT)

## make screenshots: the demo's screens at 1024x768 (work queue, a calculated field, the dose step, an identity
## stop, QA's review, the bedside check) into docs/screens/, from a throwaway `init --demo` + `demo-batch` instance
screenshots: install-test chromium
	$(BIN)/python tools/screens/shoot.py --out docs/screens

clean-venv:
	rm -rf $(VENV) $(LOCK_VENV)
