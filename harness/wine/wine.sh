#!/usr/bin/env bash
# The Windows agent (teardown.exe, built for x86_64-pc-windows-gnu) under
# Wine, as the remote client of a bench: the Winsock seam and the TCP-table
# reader run end to end. The stack under test is then this kernel's through
# Wine's Winsock (the agent names it `wine`), not Windows's.
#
# Two namespaces stand in for the machines, as in harness/tests/agent.rs:
# tdw-remote holds the agent (under Wine, with a Wine prefix of its own)
# and a bridge the bench's router joins; tdw-home runs `teardown run`.
# The same catalogue runs once with the Linux agent in tdw-remote, so that
# the comparison (reports/bench/wine.md) is of the client's stack alone.
#
# usage: wine.sh [scenario files or run options...]
#   no arguments: the catalogue; writes reports/bench/{remote-linux,wine-linux}.json
#   and their pcaps, and reports/bench/wine.md
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/teardown
exe=target/x86_64-pc-windows-gnu/release/teardown.exe
wine=/usr/lib/wine/wine64
home=tdw-home remote=tdw-remote
export WINEPREFIX=$PWD/target/wine/prefix WINEDEBUG=-all

[ -x "$wine" ] || { echo "wine.sh: $wine not found: sudo apt-get install wine64" >&2; exit 2; }
rustup target add x86_64-pc-windows-gnu >/dev/null
cargo build --release --locked --target x86_64-pc-windows-gnu
x86_64-w64-mingw32-gcc -shared -O2 -o "$(dirname "$exe")/bcryptprimitives.dll" \
    harness/wine/bcryptprimitives.c -ladvapi32

agents=()
cleanup() {
    for p in "${agents[@]}"; do kill "$p" 2>/dev/null || true; done
    "${wine%/*}/wineserver" -k 2>/dev/null || true
    ip netns del "$home" 2>/dev/null || true
    ip netns del "$remote" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
for n in "$home" "$remote"; do ip netns add "$n"; ip -n "$n" link set lo up; done
# The management link, over which teardown reaches the agent.
ip -n "$home" link add name m0 type veth peer name m1 netns "$remote"
ip -n "$home" addr add 198.18.255.1/30 dev m0 && ip -n "$home" link set m0 up
ip -n "$remote" addr add 198.18.255.2/30 dev m1 && ip -n "$remote" link set m1 up
# The remote machine's bench address, on the bridge the router joins.
ip -n "$remote" link add name br0 type bridge && ip -n "$remote" link set br0 up
ip -n "$remote" addr add 198.18.0.2/24 dev br0
ip -n "$remote" -6 addr add 2001:2:0:1::2/64 dev br0 nodad
ip -n "$remote" route add 198.19.0.0/24 via 198.18.0.1 dev br0 onlink
ip -n "$remote" -6 route add 2001:2:0:2::/64 via 2001:2:0:1::1 dev br0 onlink

# Starts an agent in the remote namespace on PORT and waits (bounded) for
# it to say it listens. Wine's server starts there too, so the sockets it
# makes for the agent are that namespace's.
start_agent() {
    local port=$1; shift
    local log=target/wine/agent-$port.log
    mkdir -p target/wine
    ip netns exec "$remote" "$@" agent --listen "198.18.255.2:$port" 2>"$log" &
    agents+=($!)
    for _ in $(seq 600); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        kill -0 "${agents[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "wine.sh: the agent on port $port did not start:" >&2; cat "$log" >&2; exit 1
}
start_agent 7070 "$wine" "$exe"
run() {
    ip netns exec "$home" "$bin" run --bench --client-stack "remote=198.18.255.2:$1" \
        --client-link "$remote/br0" "${@:2}"
}
if [ $# -gt 0 ]; then
    run 7070 "$@"
    exit
fi
start_agent 7071 "$bin"
status=0
for pair in "wine-linux 7070" "remote-linux 7071"; do
    set -- $pair
    out=reports/bench/$1
    rm -rf "$out" "$out.json"
    run "$2" --quiet --report "$out.json" --captures "$out" | tail -n 3 || status=1
done
"$bin" compare --format markdown reports/bench/remote-linux.json reports/bench/wine-linux.json \
    > reports/bench/wine.md || true
tail -n 3 reports/bench/wine.md
exit $status
