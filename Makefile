# labtrain: `make run` starts the service, `make test` passes the suite; both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -q --durations=15
# On a CUDA machine: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_INDEX ?=

.PHONY: venv install run test lint typecheck bench clean dist

venv install: $(STAMP)

# Reinstalls only when the dependencies change; otherwise `make run` / `make test` start at once.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifneq ($(TORCH_INDEX),)
	$(BIN)/pip install -c constraints.txt torch --index-url $(TORCH_INDEX)
endif
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	# tests/integration/test_generated_client.py: its pin asks typer<0.28, which would undo the CLI's help.
	$(BIN)/pip install -c constraints.txt --no-deps 'openapi-python-client==0.29.1' 'ruamel.yaml==0.19.1'
	touch $@

run: $(STAMP)
	$(BIN)/labtrain up

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy api worker ml core cli labtrain

bench: $(STAMP)
	$(BIN)/python -m bench.service_overhead
	$(BIN)/python bench/train_speed.py
	$(BIN)/python -m bench.sweep_service
	$(BIN)/python -m bench.load

# Two wheels in dist/: the service (labtrain, for its own virtual environment or container) and
# the client alone (labtrain-client: the `labtrain` package, httpx; pandas and PyYAML as extras).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/pip wheel --no-deps --no-build-isolation -w dist . ./client

# Removes the environment and caches, never var/ (the embedded database and the artifacts).
clean:
	rm -rf $(VENV) build dist *.egg-info client/build client/*.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
