# Two entry points (see README): `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint setup

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade "pip>=24"
	$(VENV)/bin/python -m pip install -e ".[test]"
	# TorchRay (test-only peer for Extremal Perturbation, the pointing game, Excitation Backprop): its 2019 metadata
	# pins pycocotools/pymongo that the tested modules never import, so it is installed without dependencies.
	$(VENV)/bin/python -m pip install --no-deps "torchray==1.0.0.2"
	$(VENV)/bin/python -c "import torchvision, timm, torch; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m lit_xai fit

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check lit_xai tests benchmarks
