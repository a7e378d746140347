# Two commands do all the set-up on a fresh machine:  `make run` (the main job) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The offline data folder shipped beside the checkout; override with OTBENCH_DATA=/path make ...
export OTBENCH_DATA ?= $(abspath ../shared/data)
PRESET ?= quick
N ?= 20
EPS ?= 2,3
# Your own run's tables: a folder of their own, so `make run` never overwrites the committed record in reports/
OUT ?= otbench-report

.PHONY: install run test bench report chromium

.otbench-installed: pyproject.toml
	$(PIP) install -e '.[test]'
	@# torchattacks ships an old `robustbench` folder; put the real one back if it won the install order
	$(PYTHON) -m otbench.compat.robustbench || $(PIP) install --force-reinstall --no-deps robustbench==1.1.1
	$(PYTHON) -m otbench.compat.robustbench
	touch $@

install: .otbench-installed

run: install
	$(PYTHON) -m otbench run --defense otad,standard --attack square --dataset mnist --eps $(EPS) --n $(N) --preset $(PRESET)
	$(PYTHON) -m otbench report --preset $(PRESET) --tables otad-table-3 --out $(OUT)/$(PRESET)

# the leaderboard's browser test (tests/report/test_site_browser.py) drives Debian's headless chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	    echo "chromium not installed (no apt-get or no permission): the browser test will be skipped"; }

test: install chromium
	$(PYTHON) -m pytest -q tests

bench: install
	$(PYTHON) bench/bench_cip.py
