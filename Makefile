# Cairn's two set-up commands:
#   make run    start a single-node Cairn on 127.0.0.1:7400, data in ./cairn-data
#   make test   build everything and run the whole test suite
# Both install the system packages the build needs when they are missing.

.PHONY: run test deps

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
