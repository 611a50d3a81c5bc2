# Troupe: `make run` starts a node, `make test` runs the gate.
#
# Both install what a fresh Debian (bookworm) machine lacks first (`make deps`). Rust itself
# is expected to be there already, installed through rustup.

SHELL := /bin/bash
CARGO ?= cargo
ARGS ?=

# rustup installs into ~/.cargo/bin, which a non-login shell may not have on its PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

# One target at a time: cargo parallelises on its own, and `run` must build before it starts.
.NOTPARALLEL:

.PHONY: all deps build run test bench fmt clean

# The workspace's crates compiled by clippy-driver with every warning an error (`make test`).
LINTED = RUSTC_WORKSPACE_WRAPPER="$$(rustc --print sysroot)/bin/clippy-driver" \
  CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

all: build

deps:
	@if ! command -v $(CARGO) >/dev/null 2>&1; then \
	  echo "error: cargo is not on PATH." >&2; \
	  echo "Troupe needs a Rust toolchain installed through rustup (stable, 1.90 or newer):" >&2; \
	  echo "see https://rustup.rs, then run make again. This Makefile does not download toolchains." >&2; \
	  exit 1; \
	fi
	@if ! $(CARGO) fmt --version >/dev/null 2>&1 || ! $(CARGO) clippy --version >/dev/null 2>&1; then \
	  if ! command -v rustup >/dev/null 2>&1; then \
	    echo "error: rustfmt or clippy is missing and rustup is not available to add them." >&2; \
	    exit 1; \
	  fi; \
	  echo "==> rustup component add rustfmt clippy"; \
	  rustup --quiet component add rustfmt clippy; \
	fi
	@missing=""; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v python3 >/dev/null 2>&1 || missing="$$missing python3"; \
	python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium fonts-dejavu-core"; \
	pkg-config --exists libvirt 2>/dev/null || missing="$$missing libvirt-dev"; \
	if command -v dpkg-query >/dev/null 2>&1 && \
	   ! dpkg-query -W -f='$${Status}' libc6-dev 2>/dev/null | grep -q 'install ok installed'; then \
	  missing="$$missing libc6-dev"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "error: missing$$missing, and apt-get is not available: install them by hand." >&2; \
	    exit 1; \
	  fi; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	  else echo "error: missing$$missing; run make as root or install sudo." >&2; exit 1; \
	  fi; \
	  echo "==> apt-get install$$missing"; \
	  $$sudo apt-get update -qq >/dev/null; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@# The Python MCP SDK (PyPI) that the MCP tests' servers and clients are made with, and
	@# the real SMTP server (aiosmtpd) alert emails are sent to, in a venv under target/ that
	@# the tests use.
	@if ! target/mcp-venv/bin/python -c 'import mcp, aiosmtpd' >/dev/null 2>&1; then \
	  echo "==> python3 -m venv target/mcp-venv && pip install mcp==2.3.0 aiosmtpd==1.4.6"; \
	  python3 -m venv target/mcp-venv && \
	  target/mcp-venv/bin/pip install --quiet --disable-pip-version-check mcp==2.3.0 aiosmtpd==1.4.6; \
	fi

build:
	$(CARGO) build --release --bin troupe

# Defaults: data dir ./troupe-data, gateway on 127.0.0.1:8080.
# Pass flags through ARGS: make run ARGS="--listen 127.0.0.1:9090"
run: deps build
	exec ./target/release/troupe serve $(ARGS)

test: deps
	@printf '\n==> %s\n' 'deploy/validate.sh'
	@bash deploy/validate.sh
	@# The dashboard: its Node tools (pinned in package-lock.json) type-check and unit-test it,
	@# and its committed build (gateway/dashboard/dist, embedded in troupe) must be what the
	@# sources build to. `make run` needs none of this: dist/ is committed.
	@printf '\n==> %s\n' 'dashboard: npm ci, tsc, vitest, dist/ matches its sources'
	@cd gateway/dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run --silent check && npm test --silent && node scripts/verify.mjs
	@printf '\n==> %s\n' 'cargo fmt --all -- --check'
	@$(CARGO) fmt --all -- --check
	@# One TLS provider (aws-lc-rs, see runtime/src/tls.rs): a second one (ring) is a second
	@# crypto library compiled for nothing.
	@printf '\n==> %s\n' 'one rustls provider: cargo tree -i ring finds nothing'
	@if [ -n "$$($(CARGO) tree --workspace -e normal,dev -i ring 2>/dev/null)" ]; then \
	  echo "error: ring is compiled beside aws-lc-rs:" >&2; $(CARGO) tree --workspace -e normal,dev -i ring >&2; exit 1; fi
	@# Clippy lints inside the test build: clippy-driver compiles the workspace's own crates
	@# (as `cargo clippy` has it do, through the same two variables), so the dependencies are
	@# compiled once for both, not checked for clippy and then built again for the tests (on a
	@# fresh 2-core machine `cargo clippy` alone took 278 s of a 1,204 s gate). A warning of
	@# rustc or clippy fails the build, as `cargo clippy -- -D warnings` did. The benches are
	@# built too, with the test profile: they must keep compiling.
	@printf '\n==> %s\n' 'cargo test --workspace --all-targets --no-run, linted by clippy (-D warnings)'
	@$(LINTED) $(CARGO) test --workspace --all-targets --no-run
	@printf '\n==> %s\n' 'cargo test --workspace'
	@# Without backtraces: a failing test's message and its place are then the last lines
	@# before the summary, where a shortened CI log still shows them (a backtrace of 30
	@# frames pushed them out). Run one test with RUST_BACKTRACE=1 to see where it came from.
	@# Four tests at once on two cores: the system tests mostly wait on their nodes (events,
	@# failovers, timeouts), so more of them overlap those waits. Measured on this 2-core
	@# machine, one system binary: 292 s with two, 203 s with three, 163 s with four (1.5
	@# cores busy on average: 244 s of CPU).
	@RUST_TEST_THREADS=4 RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 $(LINTED) $(CARGO) test --workspace
	@# cargo test built target/debug/troupe: the dashboard end to end in Debian's Chromium.
	@printf '\n==> %s\n' 'dashboard end to end (playwright-core, chromium)'
	@cd gateway/dashboard && TROUPE_BIN=$(CURDIR)/target/debug/troupe node e2e/run.mjs
	@# The Python test kit, installed as a user would (pip install ./testkit/python, in a venv
	@# under target/), runs its own example tests against the same binary.
	@printf '\n==> %s\n' 'testkit/python: pip install, then its example tests (pytest)'
	@python3 -m venv target/testkit-venv
	@target/testkit-venv/bin/pip install --quiet --disable-pip-version-check pytest==8.3.4 ./testkit/python
	@TROUPE_BIN=$(CURDIR)/target/debug/troupe target/testkit-venv/bin/python -m pytest -q -p no:cacheprovider testkit/python/tests

# Record the figures in BENCHMARKS.md by hand.
bench: deps
	$(CARGO) bench --workspace

# The LLM agent loop against a fake model server (50 ms a call), Troupe's and LangGraph's in
# the same run: see benches/llm_loop/run.py. Python side in a venv under target/; the figures
# are the release build's (TROUPE_BIN names another). Flags through ARGS, e.g.
# make bench-llm ARGS="--agents 200 --only troupe"
.PHONY: bench-llm
bench-llm: build
	@python3 -m venv target/bench-venv
	@target/bench-venv/bin/pip install --quiet --disable-pip-version-check -r benches/llm_loop/requirements.txt
	TROUPE_BIN=$${TROUPE_BIN:-$(CURDIR)/target/release/troupe} target/bench-venv/bin/python benches/llm_loop/run.py $(ARGS)

# Alert delivery latency, event to webhook (benches/alerts/run.py; BENCHMARKS.md).
.PHONY: bench-alerts
bench-alerts: build
	TROUPE_BIN=$${TROUPE_BIN:-$(CURDIR)/target/release/troupe} python3 benches/alerts/run.py $(ARGS)

.PHONY: bench-cli
bench-cli: build
	TROUPE_BIN=$${TROUPE_BIN:-$(CURDIR)/target/release/troupe} python3 benches/cli/run.py $(ARGS)

# Where a replicated write's CPU goes, per node and thread (benches/replicated_cpu.py;
# BENCHMARKS.md), e.g. make bench-replicated-cpu ARGS="--clients 16"
.PHONY: bench-replicated-cpu
bench-replicated-cpu: build
	python3 benches/replicated_cpu.py $${TROUPE_BIN:-$(CURDIR)/target/release/troupe} $(ARGS)

# A member that needs a snapshot catching up while the cluster writes on
# (benches/snapshot_catch_up.py; BENCHMARKS.md), e.g. make bench-snapshot-catch-up ARGS="--every 400"
.PHONY: bench-snapshot-catch-up
bench-snapshot-catch-up: build
	python3 benches/snapshot_catch_up.py $${TROUPE_BIN:-$(CURDIR)/target/release/troupe} $(ARGS)

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
