# Two commands for a newcomer: `make demo` (install + the whole job end to end) and `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# OpenMP threads that sleep instead of spinning when idle (the scripts set the same default): on 2 busy
# cores, spinning made EfficientNet-Lite0 ~10x slower (5 vs 59 img/s); on an idle machine it costs ~1/3
# (178 vs 269 img/s). `OMP_WAIT_POLICY=ACTIVE make demo` when the machine is yours alone.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install system-deps benchmark lint clean

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

# The demo, end to end: train, test, index, tag, search, gallery. Each step is a command from README.
DEMO_CKPT   := checkpoints/fashion_mnist/last.ckpt
DEMO_IMAGES := demo_output/fashion_mnist_test
demo: install system-deps
	$(PY) train.py fit --config configs/fashion_mnist.yaml
	$(PY) train.py test --config configs/fashion_mnist.yaml --ckpt_path $(DEMO_CKPT)
	$(PY) -m indexing build-words --out indexes/words
	$(PY) -m datamodules export --out $(DEMO_IMAGES) --split test --per-class 50
	$(PY) -m indexing build-images $(DEMO_IMAGES) --out indexes/demo --checkpoint $(DEMO_CKPT)
	$(PY) tag.py $$(ls $(DEMO_IMAGES)/*/*.png | awk 'NR % 50 == 1') --checkpoint $(DEMO_CKPT) --top-k 5 \
	    --html demo_output/tags.html
	$(PY) search.py boot footwear bag "summer dress" $$(ls $(DEMO_IMAGES)/Sneaker/*.png | head -1) \
	    --index indexes/demo --top-k 8 --html demo_output/search.html --grid demo_output/search.png
	@echo "gallery: demo_output/search.html, contact sheet: demo_output/search.png, tags: demo_output/tags.html"

# All benchmarks into benchmarks/results/benchmark.json, camera-size JPEGs included (bench_camera.py makes
# them once under ~/.cache/wordsight/bench; CAMERA_IMAGES=96 by default).
CAMERA_IMAGES ?= 96
benchmark: install system-deps
	$(PY) benchmarks/run_all.py --camera-images $(CAMERA_IMAGES)

clean:
	rm -rf checkpoints indexes runs .cache demo_output
