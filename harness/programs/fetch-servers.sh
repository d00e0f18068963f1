#!/usr/bin/env bash
# `just servers`: the real servers the catalogue's program scenarios run,
# from the host's own apt sources. nginx is downloaded and unpacked into
# target/servers/ (installing its package would start a service on the
# host's port 80); busybox and python3 come from `just deps` (no services).
# target/servers/bin goes first on the PATH of every just recipe.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$PWD/target/servers
if [ -x "$work/bin/nginx" ] && "$work/bin/nginx" -v 2>/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "servers: nginx comes from apt (Debian/Ubuntu); elsewhere put an nginx binary in $work/bin/" >&2
    exit 1
fi
mkdir -p "$work/deb" "$work/bin"
rm -f "$work"/deb/*.deb
if ! (cd "$work/deb" && apt-get -qq download nginx 2>/dev/null); then
    apt-get -qq update
    (cd "$work/deb" && apt-get -qq download nginx)
fi
deb=$(ls "$work"/deb/nginx_*.deb | sed -n 1p)
rm -rf "$work/root" && dpkg-deb -x "$deb" "$work/root"
ln -sf ../root/usr/sbin/nginx "$work/bin/nginx"
# The shared libraries the package depends on (libssl, pcre2, zlib, ...):
# installed if missing, as its own installation would have.
libs=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/^ *//; s/[ (|].*//' | grep '^lib' || true)
need=()
for p in $libs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "servers: nginx needs: ${need[*]} (sudo apt-get install -y ${need[*]})" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
missing=$(ldd "$work/bin/nginx" | awk '/not found/ { print $1 }')
if [ -n "$missing" ]; then
    echo "servers: nginx needs libraries this machine lacks: $missing (apt-get install the packages that provide them)" >&2
    exit 1
fi
"$work/bin/nginx" -v 2>&1 | sed -n 1p >&2
