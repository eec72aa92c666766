# The two commands: `make run` and `make test`. Everything else is a step they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/lib/chromium/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench install chromium clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/.installed

## make run: set up instance/ (idempotent: keeps data and keys) and serve on 127.0.0.1:5000
run: install
	$(BIN)/flask --app mfg init --demo
	$(BIN)/gunicorn --workers 2 --threads 4 --bind 127.0.0.1:5000 --access-logfile - 'mfg:create_app()'

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi

## make test: install what the tests need and run the whole suite
test: install chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make bench: run bench/ (SQLite, and PostgreSQL when MFG_BENCH_DATABASE_URL or MFG_TEST_DATABASE_URL is set);
## writes bench/out/report.md and bench/out/report.json. BENCH_ARGS=--quick tries the harness at small sizes.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
