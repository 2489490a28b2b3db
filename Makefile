# The two commands: `make demo` runs the example, `make test` runs the test suite.
# Both create .venv on first use and install pinned versions from constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SOURCES := $(VENV)/.sources
EDITABLE := --no-build-isolation -e . --config-settings editable_mode=strict

.PHONY: demo test lint bench-paper constraints clean venv browser

venv: $(SOURCES)

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt pip setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[server,dev]' \
		--config-settings editable_mode=strict
	@touch $@

# Strict editable installs map files, not folders: re-link when a module (or a file of the
# web UI) is added or removed.
$(SOURCES): $(INSTALLED) FORCE
	@find api service workers -name '*.py' -o -name 'py.typed' -o -path 'service/ui/*' \
		| LC_ALL=C sort > $@.new
	@if ! cmp -s $@.new $@; then \
		$(PY) -m pip install -q --disable-pip-version-check --no-deps $(EDITABLE) && mv $@.new $@; \
	else rm -f $@.new; fi

FORCE:

demo: $(SOURCES)
	$(PY) -m sparsetrain demo --plot results/demo.png

# The browser test drives the web UI in Debian's chromium: installed here when missing and
# running as root (CI); otherwise that test skips and says why.
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else echo 'chromium is missing: tests/ui/test_browser.py will skip'; fi; }

test: $(SOURCES) browser
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy -p sparsetrain
	$(PY) -m pytest

lint: $(SOURCES)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy -p sparsetrain

bench-paper: $(SOURCES)
	$(PY) -m benchmarks.paper_memsgd --quick --out results/paper_memsgd.json

constraints: $(INSTALLED)
	@{ head -n 2 constraints.txt; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^sparsetrain' | sed 's/+cpu$$//'; \
	  $(PY) -m pip list --format=freeze | grep -E '^(pip|setuptools|wheel)=='; } > constraints.new
	@mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
