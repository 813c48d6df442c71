# publiek: two commands for a new user (make demo, make test); the rest for developers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-slow lint typecheck bench protos lock install clean postgres-server \
	diffprivlib-env systemd-analyze \
	chromium

# The virtual environment is created on first use and re-installed when the dependencies change.
$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	@echo "installing publiek and its pinned dependencies into $(VENV) (log: $(VENV)/install.log)"
	@( $(PY) -m pip install --upgrade "pip>=24" \
	  && $(PY) -m pip install -c constraints.txt -e '.[dev,flower,dashboard]' ) > $(VENV)/install.log 2>&1 \
	  || { tail -40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

## demo: a local federation of 12 synthetic institutions over mTLS gRPC, ending in a release
## (PLAN=deploy/plans/sector-2024.toml runs all seventeen S1-S6 tables instead of the S1 pair)
demo: $(STAMP)
	$(PY) -m deploy.demo $(if $(PLAN),--plan $(PLAN))

## test: lint, type-check and the whole test suite (slow statistical tests: make test-slow)
test: $(STAMP) lint typecheck test-fast

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test-fast: $(STAMP) postgres-server chromium systemd-analyze
	$(BIN)/pytest -m "not slow"

# The SQL-source test runs against a real PostgreSQL server that it starts and throws away
# (tests/test_node_ingest_postgres.py). It needs Debian's server binaries; as root (CI) they are
# installed when missing, otherwise the test is skipped and says why. Quick when present.
postgres-server:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  mkdir -p $(VENV); \
	  echo "installing PostgreSQL for the SQL-source test (apt-get; log: $(VENV)/postgres-install.log)"; \
	  ( apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    postgresql ) > $(VENV)/postgres-install.log 2>&1 \
	  || { tail -20 $(VENV)/postgres-install.log; \
	       echo "PostgreSQL could not be installed: its test will be skipped"; }; \
	else \
	  echo "note: no PostgreSQL server binaries (Debian package 'postgresql') and not root:"; \
	  echo "      tests/test_node_ingest_postgres.py will be skipped"; \
	fi

# The dashboard's end-to-end tests (tests/test_dashboard_browser.py) drive Debian's headless
# chromium through chromedriver. They are not optional: as root (CI) both are installed when
# missing; otherwise install them (apt-get install chromium chromium-driver) or the tests fail
# and say so.
chromium:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  mkdir -p $(VENV); \
	  echo "installing chromium for the dashboard's browser tests (apt-get; log: $(VENV)/chromium-install.log)"; \
	  ( apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    chromium chromium-driver ) > $(VENV)/chromium-install.log 2>&1 \
	  || { tail -20 $(VENV)/chromium-install.log; \
	       echo "chromium could not be installed: the dashboard's browser tests will fail"; }; \
	else \
	  echo "note: no chromium/chromedriver (Debian packages 'chromium' 'chromium-driver') and not"; \
	  echo "      root: install them, or tests/test_dashboard_browser.py fails"; \
	fi

# tests/test_deploy_systemd.py checks the units with Debian's systemd-analyze (it only reads
# files; nothing is started). As root (CI) it is installed when missing; otherwise skipped.
systemd-analyze:
	@if command -v systemd-analyze >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  mkdir -p $(VENV); \
	  echo "installing systemd for the unit checks (apt-get; log: $(VENV)/systemd-install.log)"; \
	  ( apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    systemd ) > $(VENV)/systemd-install.log 2>&1 \
	  || { tail -20 $(VENV)/systemd-install.log; \
	       echo "systemd could not be installed: the unit checks will be skipped"; }; \
	else \
	  echo "note: no systemd-analyze (Debian package 'systemd') and not root:"; \
	  echo "      tests/test_deploy_systemd.py verifies the units only where it is installed"; \
	fi

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

## bench: every benchmark in quick mode; results land in benchmarks/results/
bench: $(STAMP) diffprivlib-env
	$(PY) -m benchmarks --quick

# The segmentation benchmark's central-DP baseline, IBM diffprivlib 0.6.6, does not import with
# the scikit-learn publiek uses (>= 1.7): it gets an environment of its own, pinned, made here
# (from pip) and never while a benchmark runs.
DPL_VENV  := .venv-diffprivlib
DPL_STAMP := $(DPL_VENV)/.installed
$(DPL_STAMP): benchmarks/diffprivlib-requirements.txt
	@echo "installing diffprivlib's own environment into $(DPL_VENV) (log: $(DPL_VENV).log)"
	@( rm -rf $(DPL_VENV) && $(PYTHON) -m venv $(DPL_VENV) \
	  && $(DPL_VENV)/bin/python -m pip install --upgrade "pip>=24" \
	  && $(DPL_VENV)/bin/python -m pip install -r benchmarks/diffprivlib-requirements.txt ) \
	  > $(DPL_VENV).log 2>&1 \
	  || { tail -20 $(DPL_VENV).log; echo "diffprivlib environment failed: see $(DPL_VENV).log"; exit 1; }
	@touch $(DPL_STAMP)

diffprivlib-env: $(DPL_STAMP)

## protos: regenerate the gRPC/protobuf code after editing protocols/v1/*.proto
protos: $(STAMP)
	$(PY) -m protocols.generate

## lock: re-resolve constraints.txt (every extra, so that they stay installable together)
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet --upgrade "pip>=24"
	.lockenv/bin/pip install --quiet '.[dev,flower,dashboard]'
	.lockenv/bin/pip freeze --exclude publiek > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) $(DPL_VENV) $(DPL_VENV).log demo-output test-artifacts .mypy_cache .ruff_cache .pytest_cache
