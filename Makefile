# Tacto: two commands do everything on a fresh machine.
#   make run    Tacto on the embedded default: the HTTP API, decide and dispatch (no external services)
#   make test   every test (installs what the tests need)
# Also: make demo (a simulated month of a synthetic portfolio), make bench, make chaos, make lint,
# make fmt.

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: run test bench chaos lint fmt deps system-deps test-broker build demo

## Debian packages: curl and patch (deploy/test-broker/build.sh), what librdkafka is built with
## (rdkafka's cmake-build feature), and the browser of
## the self-service and console end-to-end test (tests/browser.rs).
SYSTEM_PKGS := curl patch cmake pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev libzstd-dev chromium
## npm packages (in tools/node): Twilio's official helper library, which the Twilio signature
## test checks against.
TWILIO_NPM_VERSION := 5.13.1
## The reference SMS segment calculator the segment test checks against.
SEGMENTS_NPM_VERSION := 1.3.0
## SendGrid's event webhook library: the reference the webhook signature test checks against.
SENDGRID_NPM_VERSION := 8.0.0
## Drives Debian's Chromium in the browser test (playwright-core never downloads a browser).
PLAYWRIGHT_NPM_VERSION := 1.64.1
## The Kafka-compatible broker of the real-broker tests: Tansu on SQLite, with two fixes to its
## fetch path (deploy/test-broker/build.sh says which and why). Built once per version and patch
## into ~/.cargo/tacto-test-broker, and reused afterwards.
TANSU_VERSION := 0.6.0
TANSU_PATCH := deploy/test-broker/tansu-sqlite-fetch.patch
TEST_BROKER_DIR := $(HOME)/.cargo/tacto-test-broker/tansu-$(TANSU_VERSION)-$(shell sha256sum $(TANSU_PATCH) | cut -c1-12)
export TANSU := $(TEST_BROKER_DIR)/bin/tansu

system-deps:
	@missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing $$missing"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -q && $$sudo apt-get install -y -q $$missing; \
	fi

## About 10 minutes the first time on 2 cores; reused afterwards.
test-broker: system-deps
	@[ -x '$(TANSU)' ] || bash deploy/test-broker/build.sh $(TANSU_VERSION) '$(TEST_BROKER_DIR)'

## What the checks use: Rust toolchain components (rustup is on every machine of this project)
## Python's fastavro (an independent Avro reader for the wire-contract tests), and PyYAML with
## kubernetes-validate for the deploy/ lint, aiosmtpd (a real SMTP server for the email tests),
## and the npm references above (in tools/node).
deps: system-deps
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@python3 -c 'import fastavro, yaml, kubernetes_validate, aiosmtpd' 2>/dev/null || \
	  python3 -m pip install --quiet --disable-pip-version-check fastavro pyyaml kubernetes-validate aiosmtpd
	@[ -d tools/node/node_modules/twilio ] && [ -d tools/node/node_modules/sms-segments-calculator ] \
	  && [ -d tools/node/node_modules/@sendgrid/eventwebhook ] \
	  && [ -d tools/node/node_modules/playwright-core ] || \
	  npm install --prefix tools/node --no-audit --no-fund --silent \
	    twilio@$(TWILIO_NPM_VERSION) sms-segments-calculator@$(SEGMENTS_NPM_VERSION) \
	    @sendgrid/eventwebhook@$(SENDGRID_NPM_VERSION) playwright-core@$(PLAYWRIGHT_NPM_VERSION)
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt

build: deps
	$(CARGO) build --release -p tacto

run: build
	$(CARGO) run --release -p tacto -- run

demo: build
	$(CARGO) run --release -p tacto -- demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --quiet -p tacto
	python3 deploy/lint.py target/debug/tacto

test: lint test-broker
	$(CARGO) test --workspace -- --skip a_full_disk

## Figures and method: BENCHMARKS.md (about half an hour; the pipeline bench alone took 23 min).
## TACTO_BENCH_ACCOUNTS sets the portfolio of the restore bench; the pipeline bench reads
## TACTO_BENCH_ACCOUNTS and TACTO_BENCH_PAYMENTS (1M and 200k embedded; 20,000 and 2,000 on
## Kafka, where the test broker, Tansu on SQLite, is the limit: see BENCHMARKS.md).
bench: deps test-broker
	$(CARGO) bench -p tacto-policy --bench core
	$(CARGO) bench -p tacto-policy --bench state_size
	TACTO_BENCH_ACCOUNTS=100000 $(CARGO) bench -p tacto-decide --bench restore
	TACTO_BENCH_ACCOUNTS=1000000 $(CARGO) bench -p tacto-decide --bench restore
	$(CARGO) bench -p tacto --bench simulate
	$(CARGO) bench -p tacto --bench pipeline
	TACTO_BENCH_BACKEND=kafka TACTO_BENCH_ACCOUNTS=20000 TACTO_BENCH_PAYMENTS=2000 \
	  $(CARGO) bench -p tacto --bench pipeline

## Fault injection, bounded in time (figures and method: RELIABILITY.md): 25 SIGKILLs of tacto
## run during 100,000 events against a faulty provider; on Kafka, 20 SIGKILLs of decide and
## dispatch and the broker down for 30 s during 100,000 events offered at 150/s (about 15
## minutes); and a full disk (mounts a tmpfs:
## run as root). `make test` runs smaller chaos runs (3,000 events and 5 kills embedded; 2,000
## events, 4 kills and the broker down 5 s on Kafka).
chaos: deps test-broker
	TACTO_CHAOS_EVENTS=100000 TACTO_CHAOS_KILLS=25 $(CARGO) test --release -p tacto --test chaos -- --nocapture
	TACTO_CHAOS_EVENTS=100000 TACTO_CHAOS_KILLS=20 TACTO_CHAOS_RATE=150 \
	  TACTO_CHAOS_BROKER_DOWN_SECS=30 $(CARGO) test --release -p tacto --test kafka_chaos -- --nocapture
	$(CARGO) test --release -p tacto --test disk_full -- --nocapture

fmt:
	$(CARGO) fmt --all
