# The two commands of the README. Both set up .venv first (idempotent, fast when done).
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/lusifer demo $(DEMO_ARGS)

test: setup
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/mypy
	HF_HUB_OFFLINE=1 .venv/bin/pytest -q $(PYTEST_ARGS)

# The fast tier for working (under 3 minutes on one core): no system tests (kill/resume,
# torchrun, demo, rehearsal) and no real-backbone integration tests. CI runs `make test`.
test-fast: setup
	HF_HUB_OFFLINE=1 .venv/bin/pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/ruff format --check src tests benchmarks scripts
