# Lookbook: `make demo` sets up and serves search over Fashion-MNIST; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The newest torch/torchvision pair these machines install from local disk; override to taste.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_CONFIG ?= configs/demo.toml
PYTEST_ARGS ?=

.PHONY: install catalog browser demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev,cluster]'
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist when it is missing and apt can install it;
# `manage.py prepare-catalog` then falls back to catalog.root or torchvision's download.
catalog: install
	@if [ ! -d "$(FASHION_MNIST_DIR)" ] && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  echo "Installing Debian's dataset-fashion-mnist into $(FASHION_MNIST_DIR)"; \
	  $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
	  || echo "Could not install dataset-fashion-mnist; trying the other ways."; \
	fi
	$(PY) manage.py --config $(DEMO_CONFIG) prepare-catalog

demo: catalog
	$(PY) manage.py --config $(DEMO_CONFIG) train
	$(PY) manage.py --config $(DEMO_CONFIG) build-index
	$(PY) manage.py --config $(DEMO_CONFIG) evaluate
	$(PY) manage.py --config $(DEMO_CONFIG) serve --prod

# Debian's chromium for the browser test (Playwright drives it; it never downloads a browser of its own).
# Tolerant of failure like the catalog: without it, the browser test is skipped and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  echo "Installing Debian's chromium for the browser test"; \
	  $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1; } \
	  || echo "Could not install chromium; the browser test will be skipped."; \
	fi

test: catalog browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: catalog
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) var reports *.egg-info
