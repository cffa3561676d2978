# The two commands: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Tests run with DEBUG off, like production; they need a key of their own.
TEST_ENV := SECRET_KEY=test-only-secret-key-not-for-production DEBUG=0 \
	EMAIL_URL=consolemail:// SMS_BACKEND=console SECURE_SSL_REDIRECT=0 OTP_REQUIRED=0

.PHONY: run test lint bench bench-small install migrate seed clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Quiet unless it fails: then what pip said is shown.
$(VENV)/.installed: $(BIN)/python requirements.txt requirements-dev.txt
	@echo "Installing the Python packages into $(VENV) (a few minutes the first time)..."
	@($(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -r requirements-dev.txt) \
		> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@touch $@

install: $(VENV)/.installed

# axe-core, which the browser tests inject to check accessibility (package-lock.json pins it).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

migrate: install
	@DEBUG=1 $(BIN)/python manage.py migrate --noinput -v 0

seed: migrate
	@DEBUG=1 $(BIN)/python manage.py seed_demo

# The admin on http://localhost:$(PORT)/admin/ with a Celery worker and beat; Ctrl-C stops all.
# Links in emails and the calendar page point at the server this starts, unless SITE_URL says
# where the public address is. One line says when it is ready ("ready.1 | Ready: ...").
run: seed
	@DEBUG=1 WEB_PORT=$(PORT) SITE_URL=$${SITE_URL:-http://localhost:$(PORT)} PATH="$(abspath $(BIN)):$$PATH" \
		$(BIN)/honcho start --procfile Procfile.dev --port $(PORT)

# A local run keeps its test database between runs, so one file runs in seconds
# (`make test ARGS=tests/test_coi.py`); after a migration changes, `make test ARGS=--create-db`.
# CI always builds it anew.
PYTEST_DB := $(if $(CI),--create-db,--reuse-db)
test: install node_modules/.installed
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_DB) $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(TEST_ENV) $(BIN)/python manage.py makemigrations --check --dry-run
	$(TEST_ENV) $(BIN)/python manage.py check

# Benchmarks run on PostgreSQL (a database of their own, <name>_bench) and redis-servers of
# their own; results go to bench/results/. `bench-small` is the fiftieth-size smoke run.
BENCH_DB := $${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tracker}
# procrastinate, a peer in the bench, needs psycopg 3: a virtualenv of its own (see
# requirements-peers.txt).
PEERS_VENV := var/peers-venv
$(PEERS_VENV)/.installed: requirements.txt requirements-peers.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet -r requirements-peers.txt
	touch $@

bench: install $(PEERS_VENV)/.installed
	DATABASE_URL=$(BENCH_DB) OTP_REQUIRED=0 $(BIN)/python bench/run.py

bench-small: install $(PEERS_VENV)/.installed
	DATABASE_URL=$(BENCH_DB) OTP_REQUIRED=0 $(BIN)/python bench/run.py --small

clean:
	rm -rf $(VENV) var node_modules .pytest_cache .ruff_cache
