# vicourse: `make book` builds the website, `make test` runs every check CI runs.
# Both create .venv and install the pinned set (constraints.txt) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CHAPTER_SOURCES := $(wildcard book/chapters/*.md)
NOTEBOOKS := $(wildcard book/chapters/*.ipynb)

export MPLBACKEND := Agg
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: install book test lint meta unit pairs notebooks book-strict execute sync bench constraints clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c constraints.txt pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	@# TensorFlow's C++ start-up logs bypass Python and would land in stored notebook outputs;
	@# kernels started from this venv leave fd-level output on the terminal instead.
	mkdir -p $(VENV)/etc/ipython
	echo 'c.IPKernelApp.capture_fd_output = False' > $(VENV)/etc/ipython/ipython_kernel_config.py
	touch $@

book: $(INSTALLED)
	$(BIN)/jupyter-book build .
	@echo "The website is at file://$(CURDIR)/_build/html/index.html"

test: lint meta pairs unit notebooks book-strict
	@echo "make test: all checks passed."

lint: $(INSTALLED)
	$(BIN)/ruff check .

TOOLS := .venv-tools
TOOLS_INSTALLED := $(TOOLS)/.installed

$(TOOLS_INSTALLED): constraints-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet -c constraints-tools.txt cffconvert
	touch $@

# Repository metadata, offline: the workflow files against GitHub's schema (vendored in
# check-jsonschema) and CITATION.cff against the CFF schema.
meta: $(INSTALLED) $(TOOLS_INSTALLED)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema custom.github-workflows-require-timeout \
		.github/workflows/*.yml
	$(BIN)/pre-commit validate-config .pre-commit-config.yaml
	$(TOOLS)/bin/cffconvert --validate -i CITATION.cff

pairs: $(INSTALLED)
	$(BIN)/python scripts/check_pairs.py book/chapters

unit: $(INSTALLED)
	$(BIN)/pytest tests

notebooks: $(INSTALLED)
	$(BIN)/pytest --nbval-lax -p no:cacheprovider $(NOTEBOOKS)

book-strict: $(INSTALLED)
	$(BIN)/jupyter-book build . --all -W --keep-going
	@echo "The website is at file://$(CURDIR)/_build/html/index.html"

# The install cell's URL comes from _config.yml (repository.url), then jupytext pairs each
# .md source with its .ipynb (stored outputs are kept).
sync: $(INSTALLED)
	$(BIN)/python scripts/install_cell.py book/chapters
	$(BIN)/jupytext --sync $(CHAPTER_SOURCES)

execute: sync
	$(BIN)/python scripts/execute_notebooks.py $(NOTEBOOKS)

BENCH_INSTALLED := $(VENV)/.bench-installed

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test,bench]"
	touch $@

bench: $(BENCH_INSTALLED)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

constraints: $(INSTALLED)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^vicourse' > constraints.tmp
	{ head -n 2 constraints.txt; cat constraints.tmp; echo "pip==$$($(BIN)/pip --version | cut -d' ' -f2)"; } > constraints.new
	rm constraints.tmp && mv constraints.new constraints.txt

clean:
	rm -rf _build .pytest_cache .ruff_cache
