# Thin wrappers: each target is a real command you can also run by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: test lint typecheck demo bench chaos wheels-pi wheels-pi-test pi-proof system-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	bash scripts/ensure-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: system-deps lint typecheck
	$(BIN)/pytest -m "not hardware and not chaos"

demo: system-deps $(STAMP)
	$(BIN)/python -m demo

bench: system-deps $(STAMP)
	$(BIN)/python -m bench

chaos: system-deps $(STAMP)
	VIGIL_CHAOS_SECONDS=$${VIGIL_CHAOS_SECONDS:-90} $(BIN)/pytest -m chaos -s tests/chaos

# Wheels for the wearable's first boot (no network needed there): Vigil and its device
# dependencies for 64-bit Raspberry Pi OS. PI_PYTHON=3.11 for Bookworm, 3.13 for Trixie.
# pip itself too (a venv without ensurepip can run it from its wheel). The GPIO backend
# lgpio is fetched on its own: it has no wheel for every Python (none for 3.13), and then
# first boot uses the image's python3-lgpio, which Raspberry Pi OS Lite ships.
PI_PYTHON ?= 3.11
PI_WHEELS ?= dist/pi-wheels
PI_TARGET = --only-binary=:all: --implementation cp --python-version $(PI_PYTHON) \
	--platform manylinux_2_34_aarch64 --platform manylinux_2_28_aarch64 \
	--platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
wheels-pi: $(STAMP)
	rm -rf $(PI_WHEELS) && mkdir -p $(PI_WHEELS)
	$(BIN)/pip wheel --quiet --no-deps -w $(PI_WHEELS) .
	$(BIN)/pip download --quiet -d $(PI_WHEELS) $(PI_TARGET) \
	  "$$(ls $(PI_WHEELS)/vigil-*.whl)[device]" pip
	$(BIN)/pip download --quiet -d $(PI_WHEELS) $(PI_TARGET) 'lgpio>=0.2' \
	  || echo "no lgpio wheel for Python $(PI_PYTHON): first boot uses the image's python3-lgpio"
	@ls $(PI_WHEELS)

# The test tools for the same target, for `make pi-proof`'s emulated unit tests (not for a card).
wheels-pi-test: $(STAMP)
	mkdir -p $(PI_WHEELS)
	$(BIN)/pip download --quiet -d $(PI_WHEELS) $(PI_TARGET) pytest pytest-timeout pytest-mock hypothesis \
	  'psycopg[binary]'

# First boot on arm64 Debian roots under qemu-user, Bookworm and Trixie (docs/pi-proof.md).
# Needs root; not part of `make test`. PI_PROOF_ARGS="--release trixie --keep" to narrow it.
pi-proof: system-deps $(STAMP)
	bash scripts/ensure-pi-proof-deps.sh
	$(BIN)/python -m tests.pi_proof $(PI_PROOF_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
