# Two commands do all the set-up: `make lab` (the tutorial) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
# torch is installed first, pinned to the tested version. Choose the build for your
# hardware with e.g. TORCH="torch==2.13.0 --index-url <PyTorch's CPU or CUDA index>".
TORCH  ?= torch==2.13.0
# On a machine with an NVIDIA GPU (nvidia-smi answers) the GPU extra comes too: torchvision
# built for the same torch (nvJPEG decoding) and ONNX Runtime's CUDA build in place of its
# CPU one. Elsewhere the install stays lean. Force either way with GPU=1 or GPU=.
GPU    ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCHVISION ?= torchvision==0.28.0
EXTRAS  = test$(if $(GPU),$(comma)gpu)
comma  := ,

.PHONY: install lab test lint docs clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH) $(if $(GPU),$(TORCHVISION))
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
ifneq ($(GPU),)
	$(BIN)/pip uninstall -q -y onnxruntime
	$(BIN)/pip install -q --force-reinstall --no-deps onnxruntime-gpu
endif
	touch $@

install: $(VENV)/.installed

lab: install
	$(BIN)/jupyter lab --notebook-dir=notebooks

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -v tests
	HF_HUB_OFFLINE=1 $(BIN)/pytest -v --durations=0 --nbmake notebooks
	@stray=$$(git status --porcelain --untracked-files=all 2>/dev/null | grep '^??' | grep -v ' results/'); \
	if [ -n "$$stray" ]; then echo "written outside results/:"; echo "$$stray"; exit 1; fi

# Run every notebook with the full profile (about 70 min on 2 CPU cores) and publish the
# executed copies, machine named at the top, in docs/executed/; notebooks/ stays clean.
docs: install
	$(BIN)/python docs/publish.py

clean:
	rm -rf $(VENV) .pytest_cache
