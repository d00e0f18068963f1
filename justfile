# teardown: `just run-scenarios` runs the catalogue, `just test` runs the tests.
# Both install what they need on Debian/Ubuntu (as root) or say what to install.

set shell := ["bash", "-euo", "pipefail", "-c"]

bin := "target/release/teardown"

# List the recipes
default:
    @just --list

# Install missing system packages (Debian/Ubuntu, as root); elsewhere say what to install
deps *packages="libpcap-dev pkg-config nftables":
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    for p in {{packages}}; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && exit 0
    if ! command -v apt-get >/dev/null; then
        echo "teardown needs these packages (or your distribution's equivalent): ${missing[*]}" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Build the teardown binary (release)
build: deps
    cargo build --release --locked

# Run every scenario (or: just run-scenarios -f linger -p family=ipv6); needs root, see README
run-scenarios *args: build
    {{bin}} run {{args}}

# The CI matrix: every case, JUnit for the CI system, and the check against the committed baseline
matrix *args: build
    {{bin}} run --report reports/matrix.json --junit reports/junit.xml --baseline reports/baseline/{{os()}}.json {{args}}

# Re-record reports/baseline/<os>.json from 3 full runs (facts that differ between them are not checked)
baseline runs="3": build
    #!/usr/bin/env bash
    set -euo pipefail
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    for i in $(seq {{runs}}); do
        echo "run $i of {{runs}}" >&2
        if ! {{bin}} run --quiet --no-captures --report "$dir/run$i.json" > "$dir/out$i.txt" 2>&1; then
            grep -v "^[a-z0-9-]* *ipv[46] .* pass$" "$dir/out$i.txt" >&2 || true
            echo "run $i did not pass (above); fix that before recording a baseline" >&2
            exit 1
        fi
    done
    {{bin}} baseline record "$dir"/run*.json -o reports/baseline/{{os()}}.json

# Run the catalogue N times with CPU hogs outranking it, and check every run against its
# expectations and the baseline: a new expectation must survive this before it is committed
stress runs="10" hogs="2" *args: build
    #!/usr/bin/env bash
    set -euo pipefail
    dir=$(mktemp -d)
    hogs=()
    trap 'kill "${hogs[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
    for i in $(seq {{hogs}}); do nice -n -10 sh -c 'while :; do :; done' & hogs+=($!); done
    bad=0
    for i in $(seq {{runs}}); do
        if nice -n 5 {{bin}} run --quiet --no-captures --report "$dir/run$i.json" \
                --baseline reports/baseline/{{os()}}.json {{args}} > "$dir/out$i.txt" 2>&1; then
            echo "run $i of {{runs}}: pass, no drift"
        else
            bad=$((bad + 1)); echo "run $i of {{runs}}: FAILED"; grep -v "^[a-z0-9-]* *ipv[46] " "$dir/out$i.txt" || true
        fi
    done
    echo "{{runs}} runs under {{hogs}} CPU hogs: $bad failed"
    [ "$bad" -eq 0 ]

# List the cases the scenarios expand to
list *args: build
    {{bin}} list {{args}}

# Run the test suite (end-to-end tests need root; tshark is the independent witness, chromium loads the HTML)
test: (deps "libpcap-dev" "pkg-config" "nftables" "tshark" "chromium")
    cargo test --workspace --locked

# Every scenario on Debian's 6.1 and 6.12 kernels under qemu (fetched, never installed): reports/kernels/
kernel-matrix *series: build (deps "libpcap-dev" "pkg-config" "nftables" "qemu-system-x86" "cpio" "kmod" "xz-utils")
    harness/kernels/kernel-matrix.sh {{series}}

# Property-based sequences, longer than in `just test` (needs root); a failure is written as a scenario file
proptest cases="1000" seed="random": (deps "libpcap-dev" "pkg-config")
    TEARDOWN_PROPTEST_CASES={{cases}} TEARDOWN_PROPTEST_SEED={{seed}} cargo test --release --locked --test sequences -- --nocapture

# Formatting and lints, as CI checks them
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Benchmarks: per-case cost and whole-catalogue wall time (needs root)
bench: deps
    cargo bench --locked --bench cases

# Regenerate the committed JSON Schema of the report
schema: build
    {{bin}} schema > harness/schema/report.schema.json
