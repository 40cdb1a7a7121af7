# retransmon: `make run` serves metrics on :2112, `make test` runs every test.
# Both first run `make setup`, which is idempotent and quick when nothing changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
BUILD := build
BPF_OBJ := src/retransmon/kernel/retransmon.bpf.o
BPF_SRC := bpf/retransmon.bpf.c bpf/retransmon.h $(wildcard bpf/*.bpf.h)
# The object's debug info names the source directory: make it relative, so every checkout of
# a commit builds the same bytes (and the same wheel and image), given the same kernel BTF.
BPF_REPRODUCIBLE := -fdebug-prefix-map=$(CURDIR)=.
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

# The kernel matrix (`make matrix`): qemu and busybox for virtme-ng (installed into .venv by the
# dev extras), and Debian 12's kernels 6.1 and 6.12; Debian 11's 5.10 comes from `make kernels`,
# whose package needs initramfs-tools. Defined before APT_PACKAGES, which `:=` expands at once.
MATRIX_PACKAGES := qemu-system-x86 busybox-static linux-image-amd64 linux-image-6.12-amd64 initramfs-tools
BULLSEYE_KERNEL := linux-image-5.10.0-32-amd64

# Debian packages: BPF toolchain, the test bed (nftables, iproute2, ethtool),
# Prometheus (server and promtool), tmux for driving `top` in tests,
# podman, runc and debootstrap for `make image` and the container tests.
APT_PACKAGES := clang llvm libbpf-dev libbpf1 bpftool nftables iproute2 ethtool \
	prometheus tmux iperf3 procps openssl systemd podman runc debootstrap \
	$(MATRIX_PACKAGES)

# The version is written once, in src/retransmon/__init__.py (pyproject.toml reads it too).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' src/retransmon/__init__.py)
WHEEL := dist/retransmon-$(VERSION)-py3-none-any.whl
# What `make image` builds, and what deploy/kubernetes/daemonset.yaml runs.
IMAGE ?= localhost/retransmon:$(VERSION)

.PHONY: setup apt kernels venv bpf matrix dist image run test lint typecheck unit integration bench demo screenshot clean

setup: apt kernels venv bpf

# Debian 11's kernel, fetched with a temporary apt configuration (this machine's sources stay as they are).
kernels: apt
	@bash scripts/install-bullseye-kernel.sh $(BULLSEYE_KERNEL)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq; \
		apt-get check >/dev/null 2>&1 || apt-get -f install -y -qq; \
		apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq python3-venv; }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	@touch $@

bpf: $(BPF_OBJ)

$(BUILD)/vmlinux.h:
	@mkdir -p $(BUILD)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BPF_OBJ): $(BPF_SRC) $(BUILD)/vmlinux.h
	clang -O2 -g -Wall -Werror -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) $(BPF_REPRODUCIBLE) \
		-I$(BUILD) -Ibpf -c bpf/retransmon.bpf.c -o $@.tmp && mv $@.tmp $@

# The sdist and a py3-none-any wheel carrying the compiled CO-RE object (docs/deployment.md).
dist: setup
	rm -rf dist
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) \
		$(VPY) -m build --outdir dist .
	@ls -l dist

# An OCI image: a cached Debian base (debootstrap) plus the wheel; no compiler inside.
image: dist
	bash deploy/image/build.sh $(IMAGE) $(WHEEL)

run: setup
	$(VENV)/bin/retransmon serve

lint:
	$(VENV)/bin/ruff check src tests $(wildcard bench) $(wildcard scripts)
	$(VENV)/bin/ruff format --check src tests $(wildcard bench) $(wildcard scripts)

typecheck:
	$(VENV)/bin/mypy --strict src tests $(wildcard bench) $(wildcard scripts)

test: setup lint typecheck
	$(VENV)/bin/pytest
	bash scripts/kernel-matrix.sh

# One VM per kernel (5.10, 6.1, 6.12), one at a time; KERNELS="6.1.0" picks some.
matrix: setup
	bash scripts/kernel-matrix.sh

unit: setup
	$(VENV)/bin/pytest tests/unit

integration: setup
	$(VENV)/bin/pytest tests/integration

bench: setup
	$(VPY) -m bench

# See it work: serve on :2112 (unless one already runs there), Prometheus on 127.0.0.1:9090
# scraping it, and two minutes of lossy traffic in private namespaces. Ctrl-C ends it all.
demo: setup
	bash scripts/demo.sh

# docs/prometheus-graph.png, with headless Chromium (installed by the script if missing).
screenshot: setup
	$(VPY) scripts/screenshot.py

clean:
	rm -rf $(BUILD) $(BPF_OBJ) $(VENV) dist
