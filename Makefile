# Two commands for a newcomer: `make demo` (install + the whole job end to end) and `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CKPT     = $(shell ls -t checkpoints/fashion_mnist/last*.ckpt 2>/dev/null | head -1)

.PHONY: demo test install system-deps train-demo benchmark lint clean

# torch/torchvision are pinned first: on this kind of machine pip takes them from local disk.
$(STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	.venv/bin/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

# Debian packages: the Fashion-MNIST data (demo) and Chromium (the gallery screenshot test).
system-deps:
	@if dpkg -s dataset-fashion-mnist chromium >/dev/null 2>&1; then exit 0; \
	elif [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null; \
	else echo "run as root: apt-get install dataset-fashion-mnist chromium" >&2; exit 1; fi

test: install system-deps
	WANDB_MODE=disabled $(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

train-demo: install system-deps
	$(PY) train.py fit --config configs/fashion_mnist.yaml
	$(PY) train.py test --config configs/fashion_mnist.yaml --ckpt_path last

demo: train-demo

benchmark: install
	$(PY) benchmarks/bench_index.py

clean:
	rm -rf checkpoints indexes runs .cache demo_output
