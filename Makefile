# The two set-up commands of the README. Each builds its own virtual environment from scratch:
#   make demo   runtime dependencies only, then the embedded demo (simulated GPUs)
#   make test   the package with its test extra, then the whole test suite
PYTHON ?= python3
DEMO_VENV := .venv-demo
TEST_VENV := .venv

.PHONY: demo test e2e bench stress clean

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/cortex-hook demo

test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The real-server tier (not part of `make test`): provisions llama-server, vLLM (CPU) and Triton
# into ~/.cache/cortex-hook-e2e once (~11-16 min, ~4 GB), then runs them under cortex-hook (~1 min).
e2e: $(TEST_VENV)/.installed
	$(PYTHON) tests/realservers/provision.py
	CORTEX_HOOK_E2E=1 $(TEST_VENV)/bin/python -m pytest tests/realservers $(PYTEST_ARGS)

# Figures with ratios against baselines measured in the same run (bench/README.md); ~2 min,
# then the metrics' scrape cost (~1 min), the monitor's detection latency and idle cost
# (~25 min: a 10-minute idle window), and the preemption latency (~2 min).
bench:
	python3 bench/startpath.py --importtime
	python3 bench/growth.py
	python3 bench/bootstorm.py
	python3 bench/supervisor.py
	python3 bench/metrics.py
	python3 bench/monitor.py
	python3 bench/preemption.py

# The heavy reliability tier: kill -9 at random moments (>= 200 trials) and a long policy fuzz.
stress: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python bench/stress.py --trials 200

$(DEMO_VENV)/.installed: pyproject.toml $(shell find cortex_hook plugins -name '*.py' -not -path '*/__pycache__/*')
	rm -rf $(DEMO_VENV)
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install --quiet --disable-pip-version-check .
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	rm -rf $(TEST_VENV)
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) .cache build *.egg-info
