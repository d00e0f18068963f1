#!/usr/bin/env bash
# `just runsc`: fetches gVisor's runsc into target/gvisor/runsc, through a
# private apt configuration under target/gvisor/apt/ (the host's apt
# sources, lists and installed packages are not touched; nothing is
# installed). runsc is one static binary.
#
# Debian trixie's build is used: sid's build of the same release (Go 1.26)
# panics in the sentry (kernel.(*Task).assertTaskGoroutine) under the
# harness's many threads; trixie's (Go 1.24) and bookworm-backports' (Go
# 1.22) run the catalogue on both the systrap and the ptrace platform.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$PWD/target/gvisor
suite=${TEARDOWN_RUNSC_SUITE:-trixie}
if [ -x "$work/runsc" ] && [ -f "$work/suite" ] && [ "$(cat "$work/suite")" = "$suite" ]; then
    exit 0
fi
mkdir -p "$work"/apt/{lists/partial,cache/archives/partial} "$work/deb"
cat > "$work/apt/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main
SRC
apt_opts=(
    -o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
    -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
)
if [ ! -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    echo "runsc: needs Debian's archive keyring (apt-get install debian-archive-keyring)" >&2
    exit 1
fi
echo "--- runsc from Debian $suite (package lists private to $work/apt)" >&2
apt-get "${apt_opts[@]}" -qq update
rm -f "$work"/deb/*.deb
(cd "$work/deb" && apt-get "${apt_opts[@]}" -qq download "runsc/$suite")
deb=$(ls "$work"/deb/runsc_*.deb | sed -n 1p)
rm -rf "$work/x" && dpkg-deb -x "$deb" "$work/x"
install -m 0755 "$work/x/usr/bin/runsc" "$work/runsc"
echo "$suite" > "$work/suite"
"$work/runsc" --version | sed -n 1p >&2  # sed reads it all: head could leave runsc a SIGPIPE, fatal under pipefail
