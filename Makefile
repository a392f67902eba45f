# Two entry points for a fresh machine:
#   make run    set up .venv and run the default experiment (CIFAR-10, FedFomo, 15 clients)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHARED_DATA ?= ../shared/data
DATA   ?= data
# torch/torchvision versions known to install from local files on the development machine;
# elsewhere any release admitted by pyproject.toml works (override TORCH_PINS= to skip pinning).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup run test data lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS) || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# Restore the offline copies of MNIST / CIFAR-10 / CIFAR-100 when they are next to the repo;
# otherwise `make run` downloads through torchvision (dataset.download=true).
data: setup
	@if [ ! -d "$(DATA)/cifar-10-batches-py" ] && [ -f "$(SHARED_DATA)/restore.py" ]; then \
		$(PY) $(SHARED_DATA)/restore.py $(DATA); fi

run: setup data
	$(PY) -m fedfomo.main dataset.root=$(DATA) dataset.download=true $(ARGS)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check fedfomo tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .cache
