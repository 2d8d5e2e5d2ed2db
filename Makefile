# Every target that needs the virtual environment creates it first.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
export OMP_NUM_THREADS ?= 2

.PHONY: install test lint demo bench bench-quality models clean chromium

install: $(STAMP) chromium

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt diffusers transformers peft accelerate safetensors h5py typer rich \
	    tqdm av decord opencv-python-headless smplx torchmetrics onnxruntime protobuf absl-py attrs \
	    flatbuffers matplotlib pyyaml pytest ruff gradio gradio_client playwright deepspeed
	# mediapipe's and rtmlib's declared extras (jax, opencv-contrib, sounddevice) are not needed
	$(PIP) install -q --no-deps -c constraints.txt mediapipe rtmlib
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

# the browser test of `animlcm serve` drives Debian's Chromium through Playwright (Playwright's own browser
# download is not reachable); CI runs as root on a fresh machine, so it is installed here when missing
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else \
	        echo "note: no chromium and not root: 'sudo apt-get install chromium' for the browser test"; \
	    fi; \
	fi

test: $(STAMP) chromium
	$(PY) -m pytest

lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks

demo: $(STAMP)
	$(PY) -m animlcm.demo --out demo_out

bench: $(STAMP)
	$(PY) benchmarks/run.py --out benchmarks/results

bench-quality: $(STAMP)
	$(PY) benchmarks/quality.py --out benchmarks/results

models: $(STAMP)
	$(PY) -m animlcm.synth.build_models --out src/animlcm/assets/tiny

clean:
	rm -rf .venv demo_out .pytest_cache
