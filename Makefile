# migrate-harness: the README's two commands are `make test-kernel` and `make test`.
# Both run `setup` first; it is idempotent and quick once everything is installed.
PYTHON   ?= python3
SPEC     ?=
SOURCE   ?=
REV      ?=
PATCHES  ?=
CONFIGS  ?=
PROFILES ?=
OUT      ?= out/latest
PYTEST_ARGS ?=
BENCH_ARGS ?=

APT_PACKAGES = qemu-system-x86 qemu-utils busybox-static dropbear-bin openssh-sftp-server \
	linux-source-6.1 linux-source-6.12 gcc make libc6-dev flex bison bc libelf-dev libssl-dev \
	cpio xz-utils ccache rsync patch git kmod e2fsprogs python3-pip libnuma-dev

HARNESS_ARGS = $(if $(SPEC),--spec $(SPEC)) $(if $(SOURCE),--source $(SOURCE)) $(if $(REV),--rev $(REV)) \
	$(foreach p,$(PATCHES),--patch $(p)) $(foreach c,$(CONFIGS),--config $(c)) \
	$(foreach p,$(PROFILES),--profile $(p)) --out $(OUT)

.PHONY: setup test-kernel test test-slow unit test-mutants bench lint

setup: .setup-stamp

# Re-run when the dependency lists change; apt-get runs only if a package is missing.
.setup-stamp: Makefile pyproject.toml
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); }
	PIP_BREAK_SYSTEM_PACKAGES=1 $(PYTHON) -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
	@touch $@

test-kernel: setup
	$(PYTHON) -m harness.cli run $(HARNESS_ARGS)

test: setup
	$(PYTHON) -m pytest -ra --durations=25 -m "not slow" $(PYTEST_ARGS) tests

# Tests that need a full build of another config (debug info): about 10 minutes more.
test-slow: setup
	$(PYTHON) -m pytest -ra -m slow $(PYTEST_ARGS) tests

unit: setup
	$(PYTHON) -m pytest -ra -m unit tests

test-mutants: setup
	$(PYTHON) tests/e2e/mutants.py

bench: setup
	$(PYTHON) bench/bench.py $(BENCH_ARGS)
	$(PYTHON) bench/hangs.py

lint: setup
	$(PYTHON) -m ruff check harness tests
	$(PYTHON) -m mypy --strict harness
