# Cairn's two set-up commands:
#   make run    start a single-node Cairn on 127.0.0.1:7400, data in ./cairn-data
#   make test   build everything and run the whole test suite
# Both install the system packages the build needs when they are missing.
#   make bench-smoke   run every benchmark workload once, at its smallest,
#                      against Cairn, etcd and PostgreSQL (what CI runs; it
#                      never fails on a number, only when a workload cannot run)

.PHONY: run test deps bench-smoke

run: deps
	cargo run --release -p cairn-node --bin cairn -- serve $(ARGS)

test: deps
	cargo build --workspace --bins
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

deps:
	@scripts/ensure-deps

# The debug binary is enough to keep the harness working; numbers come from
# `cairn-bench run` on a release build (bench/README.md).
bench-smoke: deps
	@scripts/ensure-deps bench
	cargo build --workspace --bins
	cargo run -p cairn-bench --features etcd -- run --smoke \
		--cairn-bin "$${CARGO_TARGET_DIR:-target}/debug/cairn" \
		--out "$${CARGO_TARGET_DIR:-target}/cairn-bench/smoke.json"
