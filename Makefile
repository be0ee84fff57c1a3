# Two entry points for a fresh machine: `make demo` and `make test`.
# Everything is installed into ./.venv; Chromium comes from Debian (root or sudo).
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LOGDIR ?= demo/logs
PORT ?= 6006

.PHONY: demo test lint chromium node

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 (CPU) is the build the tests use; pinned so pip takes no CUDA build.
	$(PY) -m pip install -q -e '.[tf,test,plot,lightning,flax,tensorboardx,fast,transformers]' torch==2.13.0 ruff
	# fastai without its torchvision: PyPI's torchvision is built for the CUDA torch and fails
	# to import beside torch 2.13.0+cpu; the Learner and TensorBoardCallback need none of it.
	$(PY) -m pip install -q --no-deps fastai==2.8.12
	$(PY) -m pip install -q torch==2.13.0 'fastdownload>=0.0.8,<2' 'fastcore>=2.2.22' \
	  'fasttransform>=0.0.3' 'fastprogress>=0.2.4' 'plum-dispatch<2.10' 'spacy<4' pandas \
	  cloudpickle requests pyyaml scikit-learn matplotlib
	touch $@

demo: $(VENV)/.installed
	rm -rf $(LOGDIR)
	$(PY) demo/train.py --logdir $(LOGDIR)
	@echo "Open http://localhost:$(PORT)/#convfilters"
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --port $(PORT)

chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

node:
	@command -v node >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: $(VENV)/.installed chromium node lint
	node --test frontend/test/
	$(PY) -m pytest tests -q -p no:cacheprovider
