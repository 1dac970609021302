# Two commands do all the set-up: `make lab` (the tutorial) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
# torch is installed first, pinned to the tested version. Choose the build for your
# hardware with e.g. TORCH="torch==2.13.0 --index-url <PyTorch's CPU or CUDA index>".
TORCH  ?= torch==2.13.0

.PHONY: install lab test lint notebooks-full clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

lab: install
	$(BIN)/jupyter lab --notebook-dir=notebooks

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -v tests
	HF_HUB_OFFLINE=1 $(BIN)/pytest -v --nbmake notebooks
	@stray=$$(git status --porcelain --untracked-files=all 2>/dev/null | grep '^??' | grep -v ' results/'); \
	if [ -n "$$stray" ]; then echo "written outside results/:"; echo "$$stray"; exit 1; fi

# Run every notebook with the full profile; executed copies (with plots) go to
# results/notebooks/, the committed notebooks stay free of outputs.
notebooks-full: install
	@for nb in notebooks/0*.ipynb; do start=$$(date +%s); \
	  BENCHMARK_PROFILE=full $(BIN)/jupyter nbconvert --to notebook --execute \
	    --ExecutePreprocessor.timeout=-1 --output-dir results/notebooks $$nb || exit 1; \
	  echo "$$nb: $$(( $$(date +%s) - start )) s"; done

clean:
	rm -rf $(VENV) .pytest_cache
