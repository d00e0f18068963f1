# teardown: `just run-scenarios` runs the catalogue, `just test` runs the tests.
# Both install what they need on Debian/Ubuntu (as root) or say what to install.

set shell := ["bash", "-euo", "pipefail", "-c"]

bin := "target/release/teardown"

# The real servers the program scenarios run (`just servers`) come first on every recipe's PATH.
export PATH := justfile_directory() / "target/servers/bin" + ":" + env_var("PATH")

# List the recipes
default:
    @just --list

# Install missing system packages (Debian/Ubuntu, as root); elsewhere say what to install
deps *packages="libpcap-dev liblwip-dev pkg-config nftables":
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

# Fetch the servers the program scenarios run (nginx unpacked into target/servers/, busybox, python3)
servers: (deps "busybox" "python3")
    harness/programs/fetch-servers.sh

# Build the teardown binary (release)
build: deps
    cargo build --release --locked

# Run every scenario (or: just run-scenarios -f linger -p family=ipv6); needs root, see README
run-scenarios *args: build servers
    {{bin}} run {{args}}

# The CI matrix: every case, JUnit for the CI system, and the check against the committed baseline
matrix *args: build servers
    {{bin}} run --report reports/matrix.json --junit reports/junit.xml --baseline reports/baseline/{{os()}}.json {{args}}

# Re-record reports/baseline/<os>.json from N runs at rest and N under CPU hogs (a fact that
# differs between them, such as how much a small buffer takes under load, is not checked)
baseline runs="4": build servers
    #!/usr/bin/env bash
    set -euo pipefail
    dir=$(mktemp -d)
    hogs=()
    trap 'kill "${hogs[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
    record() {
        if ! nice -n "$2" {{bin}} run --quiet --no-captures --report "$dir/$1.json" > "$dir/$1.txt" 2>&1; then
            grep -v "^pass  " "$dir/$1.txt" >&2 || true
            echo "run $1 did not pass (above); fix that before recording a baseline" >&2
            exit 1
        fi
    }
    for i in $(seq {{runs}}); do echo "run $i of {{runs}} at rest" >&2; record rest$i 0; done
    for i in 1 2; do nice -n -10 sh -c 'while :; do :; done' & hogs+=($!); done
    for i in $(seq {{runs}}); do echo "run $i of {{runs}} under 2 CPU hogs" >&2; record load$i 5; done
    kill "${hogs[@]}"; hogs=()
    {{bin}} baseline record "$dir"/rest*.json "$dir"/load*.json -o reports/baseline/{{os()}}.json

# Run the catalogue N times with CPU hogs outranking it, and check every run against its
# expectations and the baseline: a new expectation must survive this before it is committed
stress runs="10" hogs="2" *args: build servers
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
            bad=$((bad + 1)); echo "run $i of {{runs}}: FAILED"; grep -Ev "^(verdict|pass|FAIL|ERROR|unchecked|unsupported) " "$dir/out$i.txt" || true
        fi
    done
    echo "{{runs}} runs under {{hogs}} CPU hogs: $bad failed"
    [ "$bad" -eq 0 ]

# A churn capture for `teardown analyze`: N short connections (100 bytes each way, then the
# client closes; the first third of every 5,000 abort with SO_LINGER {1, 0}), run in a network
# namespace like any case; prints where the pcap is (captures/churn/<run>/churn-ipv4.pcap)
churn-capture n="20000": build
    #!/usr/bin/env bash
    set -euo pipefail
    n={{n}}
    if ! [[ "$n" =~ ^[1-9][0-9]{0,5}$ ]] || [ "$n" -gt 100000 ]; then
        echo "churn-capture: n is a count of connections from 1 to 100000, not '$n'" >&2; exit 2
    fi
    mkdir -p target/churn
    f=target/churn/churn.toml
    {
        echo "title = \"Churn: $n short connections, a third of them aborted\""
        echo 'params = { family = ["ipv4"] }'
        echo "steps = '''"
        echo "listener listen backlog 8192"
        # Rounds of 5,000: a round's sockets close before the next opens (descriptors).
        for ((a = 1; a <= n; a += 5000)); do
            b=$((a + 4999 < n ? a + 4999 : n)); r="$a..$b"; aborts=$(((b - a + 1) / 3))
            echo "client#$r connect within 30s"
            echo "server#$r accept within 30s"
            echo "client#$r write 100"
            echo "server#$r read 100 within 10s"
            echo "server#$r write 100"
            echo "client#$r read 100 within 10s"
            [ "$aborts" -gt 0 ] && echo "client#$a..$((a + aborts - 1)) setsockopt SO_LINGER on 0"
            echo "client#$r close"
            echo "server#$r read until-eof within 10s"
            echo "server#$r close"
        done
        echo "'''"
        echo '[sysctl]'
        echo '"net.ipv4.ip_local_port_range" = "10000 60999"'
        echo '"net.core.somaxconn" = 8192'
        echo '"net.ipv4.tcp_max_tw_buckets" = 65536'
    } > "$f"
    {{bin}} run --quiet --report target/churn/report.json --captures captures/churn "$f" | tail -n 3
    ls -t captures/churn/*/churn-ipv4.pcap | sed -n 1p

# List the cases the scenarios expand to
list *args: build
    {{bin}} list {{args}}

# Run the test suite (end-to-end tests need root; tshark is the independent witness, chromium loads
# the HTML, runsc runs the catalogue on gVisor)
test: (deps "libpcap-dev" "liblwip-dev" "pkg-config" "nftables" "tshark" "iproute2") browser runsc servers
    cargo test --workspace --locked

# A headless browser for the HTML test: one already on PATH (Ubuntu's runners have google-chrome),
# else Debian's chromium
browser:
    #!/usr/bin/env bash
    set -euo pipefail
    for b in ${TEARDOWN_CHROMIUM:-} chromium chromium-browser google-chrome; do
        command -v "$b" >/dev/null && exit 0
    done
    just deps chromium

# Fetch gVisor's runsc into target/gvisor/ (Debian trixie's build, through a private apt
# configuration; nothing is installed)
runsc: (deps "debian-archive-keyring")
    harness/gvisor/fetch-runsc.sh

# The catalogue on gVisor's netstack, e.g. just gvisor -f linger. Without arguments it records
# the reference report and pcaps in reports/stacks/gvisor-<runsc version>(.json)
gvisor *args: build runsc
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "{{args}}" ]; then
        exec {{bin}} run --stack gvisor {{args}}
    fi
    version=$(target/gvisor/runsc --version | awk 'NR == 1 { sub(/^0\.0~/, "", $3); print $3 }')
    out=reports/stacks/gvisor-$version
    rm -rf "$out" && mkdir -p reports/stacks
    {{bin}} run --stack gvisor --report "$out.json" --captures "$out"

# The catalogue on the bench with each pairing of Linux and gVisor hosts (client x server): the
# reference reports and pcaps in reports/bench/<client>-<server>(.json), then their comparison,
# which says whose stack decides each difference (reports/bench/matrix.md)
bench-matrix: build runsc
    just bench-pairs "linux gvisor" matrix

# smoltcp on the bench against Linux and itself: reports/bench/<client>-<server>.json and their
# pcaps, and the comparison, which says whose stack decides each difference (reports/bench/smoltcp.md)
smoltcp: build
    just bench-pairs "linux smoltcp" smoltcp

# lwIP (Debian's liblwip, in the agent's process) on the bench against Linux and itself:
# reports/bench/<client>-<server>.json and their pcaps, and the comparison (reports/bench/lwip.md)
lwip: build
    just bench-pairs "linux lwip" lwip

# The Windows agent under Wine (Debian's wine64, Wine's Winsock on this kernel) as the remote client
# of a bench, and the Linux agent in its place: reports/bench/{wine-linux,remote-linux}.json and
# pcaps, compared in reports/bench/wine.md; or `just wine <scenario files>` for those alone
wine *args: build servers (deps "wine64" "gcc-mingw-w64-x86-64")
    harness/wine/wine.sh {{args}}

# Every pairing of STACKS on the bench (client x server), committed to reports/bench/, and their
# comparison to reports/bench/NAME.md
bench-pairs stacks name: build
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p reports/bench
    status=0
    reports=()
    for c in {{stacks}}; do
        for s in {{stacks}}; do
            out=reports/bench/$c-$s
            rm -rf "$out" "$out.json"
            echo "--- client $c, server $s" >&2
            {{bin}} run --quiet --bench --client-stack "$c" --server-stack "$s" \
                --report "$out.json" --captures "$out" | tail -n 3 || status=1
            reports+=("$out.json")
        done
    done
    {{bin}} compare --format markdown "${reports[@]}" > reports/bench/{{name}}.md || true
    tail -n 3 reports/bench/{{name}}.md
    exit $status

# Every scenario on Debian's kernels, one per series from 5.10 to the newest, under qemu (fetched,
# never installed), then on this host, compared. Writes a fresh target/kernel-matrix/results/<time>/;
# `just kernel-matrix --update` refreshes reports/kernels/. Exits non-zero if any kernel failed.
kernel-matrix *args: build (deps "libpcap-dev" "liblwip-dev" "pkg-config" "nftables" "qemu-system-x86" "cpio" "kmod" "xz-utils" "zstd" "debian-archive-keyring")
    harness/kernels/kernel-matrix.sh {{args}}

# Property-based sequences, longer than in `just test` (needs root); a failure is written as a scenario file
proptest cases="1000" seed="random": (deps "libpcap-dev" "liblwip-dev" "pkg-config")
    TEARDOWN_PROPTEST_CASES={{cases}} TEARDOWN_PROPTEST_SEED={{seed}} cargo test --release --locked --test sequences -- --nocapture

# Mutated scenario files, pcaps and reports through check, analyze, compare, render and explain:
# a long randomised round (`just test` runs 200 of each with a fixed seed); no root needed
fuzz cases="20000" seed="random": (deps "libpcap-dev" "liblwip-dev" "pkg-config")
    TEARDOWN_FUZZ_CASES={{cases}} TEARDOWN_PROPTEST_SEED={{seed}} cargo test --release --locked --test fuzz -- --nocapture

# Formatting and lints, as CI checks them; the agent and the report readers are also checked
# and clippied for FreeBSD, macOS and Windows (rustup fetches their standard libraries), so a
# port cannot rot
lint: (deps "libpcap-dev" "liblwip-dev" "pkg-config")
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    rustup target add x86_64-unknown-freebsd x86_64-apple-darwin x86_64-pc-windows-gnu
    cargo clippy --workspace --lib --bins --locked --target x86_64-unknown-freebsd -- -D warnings
    cargo clippy --workspace --lib --bins --locked --target x86_64-apple-darwin -- -D warnings
    cargo clippy --workspace --lib --bins --locked --target x86_64-pc-windows-gnu -- -D warnings

# Benchmarks: per-case cost and whole-catalogue wall time (needs root)
bench: (deps "libpcap-dev" "liblwip-dev" "pkg-config" "nftables" "tshark" "tcptrace") runsc
    cargo bench --locked --bench cases

# Regenerate reports/signatures.json, the endings `teardown analyze` diagnoses, from the baseline
# and the other stacks' reference reports (after `just baseline`, `just gvisor`, `just smoltcp` or
# `just lwip`)
signatures: build
    {{bin}} signatures reports/baseline/linux.json reports/stacks/*.json reports/bench/smoltcp-smoltcp.json reports/bench/lwip-lwip.json

# Regenerate the committed JSON Schemas: the report and the agent protocol
schema: build
    {{bin}} schema > harness/schema/report.schema.json
    {{bin}} schema --agent > harness/schema/agent.schema.json
