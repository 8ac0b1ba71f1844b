# vaeinv developer commands. `make demo` and `make test` are the README's two set-up commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The CPU wheel of torch is installed first: any other torch spec pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: venv demo test lint bench bench-latent bench-multilevel docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(STAMP)

venv: $(STAMP)

# invert the demo problem (problems/demo, about 3 minutes on 2 cores), then its report:
# out/demo_report/ holds the summary table and the figures
demo: $(STAMP)
	$(BIN)/vaeinv invert demo --out out/demo.nc
	$(BIN)/vaeinv report out/demo.nc --out out/demo_report

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks examples
	$(BIN)/python -m ruff format --check src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/forward.py
	$(BIN)/python benchmarks/prior.py

# the latent-size sweep trains four VAEs (about 10 minutes on 2 cores)
bench-latent: $(STAMP)
	$(BIN)/python benchmarks/latent_size.py

# multilevel inversion of both MDGM problems against tinyDA (installed without its arviz and
# numpy pins, which vaeinv's exclude; see benchmarks/multilevel.py): the runs of
# docs/results/multilevel.md, several hours on 2 cores (tinyDA's runs take most of it)
bench-multilevel: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps tinyda==0.9.21
	$(BIN)/python benchmarks/multilevel.py --problems mdgm-gaussian --threads 1 --fine-step 0.1
	$(BIN)/python benchmarks/multilevel.py --problems mdgm-channel --threads 1 --fine-step 0.1

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site out .pytest_cache .ruff_cache
