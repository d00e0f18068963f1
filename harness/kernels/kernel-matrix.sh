#!/usr/bin/env bash
# `just kernel-matrix`: runs every scenario on Debian's packaged Linux
# kernels, one per series, booted under qemu with software emulation, then
# on this host, and compares them all.
#
# Kernels are fetched with `apt-get download` through a private apt
# configuration under target/kernel-matrix/ (the host's apt sources, lists
# and installed packages are not touched) and never installed. Each kernel
# boots an initramfs holding busybox, the teardown binary, nft, the shared
# libraries they need, the kernel's own modules for sock_diag and
# nftables, and scenarios/.
#
# Usage: kernel-matrix.sh [--update] [SERIES...]
#   SERIES   e.g. 5.10 6.1 7.3 (default: every series from 5.10 to the newest)
#   --update write into reports/kernels/ (the committed reference reports)
#            instead of a fresh target/kernel-matrix/results/<time>/
#
# Exits non-zero if any kernel's catalogue did not pass, or its results did
# not come back. A series whose packages cannot be had (no modules package,
# a .deb the mirror does not serve) is skipped and named, not fatal.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/target/kernel-matrix
bin=$root/target/release/teardown

update=0
series=()
for a in "$@"; do
    case "$a" in
        --update) update=1 ;;
        *) series+=("$a") ;;
    esac
done
[ ${#series[@]} -gt 0 ] || series=(5.10 6.1 6.12 6.16 6.17 6.18 6.19 7.0 7.1 7.2 7.3)

if [ "$update" = 1 ]; then
    out_reports=reports/kernels
    out_captures=captures/kernels
else
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    out_reports=target/kernel-matrix/results/$stamp/reports
    out_captures=target/kernel-matrix/results/$stamp/captures
fi
mkdir -p "$out_reports" "$out_captures"

mkdir -p "$work"/apt/{lists/partial,cache/archives/partial} "$work/debs"
{
    for suite in bullseye bookworm bookworm-backports trixie trixie-backports sid experimental; do
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main"
    done
} > "$work/apt/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
    -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
)
echo "--- package lists (private to $work/apt)" >&2
apt-get "${apt_opts[@]}" -qq update

# The newest linux-image package of a series (5.10 -> linux-image-5.10.0-N-amd64,
# 6.12 -> linux-image-6.12.N+debM-amd64, 7.3 -> linux-image-7.3.N+debM-amd64).
package_for() {
    local s=${1//./\\.}
    apt-cache "${apt_opts[@]}" search --names-only "^linux-image-${s}([.-][0-9]+)*(\\+deb[0-9]+)?-amd64\$" |
        cut -d' ' -f1 | sort -V | tail -1
}

# The packages a kernel is split into: the image, and its binary and
# modules packages where it depends on them (6.19 and later).
packages_of() {
    local image=$1
    echo "$image"
    apt-cache "${apt_opts[@]}" show "$image" 2>/dev/null | awk -F': ' '/^Depends:/ {print $2; exit}' |
        tr ',' '\n' | sed 's/ (.*//; s/^ *//' | grep -E '^linux-(binary|modules)-' || true
}

download() { # $1 = package; returns non-zero when the mirror does not serve it
    (cd "$work/debs" && { ls "$1"_*.deb >/dev/null 2>&1 || apt-get "${apt_opts[@]}" -qq download "$1"; })
}

(cd "$work/debs" && { ls busybox-static_*.deb >/dev/null 2>&1 || apt-get "${apt_opts[@]}" -qq download busybox-static/bookworm; })
busybox_deb=$(ls -t "$work"/debs/busybox-static_*.deb | sed -n 1p)

# Shared libraries of a binary, with the dynamic loader.
libs_of() { ldd "$1" | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}'; }

build_initramfs() { # $1 = unpacked kernel, $2 = modules dir, $3 = release, $4 = output
    local kdir=$1 mods=$2 release=$3 out=$4 stage base
    stage=$(mktemp -d)
    mkdir -p "$stage"/{bin,usr/bin,usr/sbin,proc,sys,dev,tmp,modules,work}
    dpkg-deb --fsys-tarfile "$busybox_deb" | tar -x -C "$stage" ./bin/busybox
    cp "$root/harness/kernels/init" "$stage/init"
    chmod +x "$stage/init"
    cp "$bin" "$stage/usr/bin/teardown"
    cp "$(command -v nft)" "$stage/usr/sbin/nft"
    for l in $(libs_of "$bin"; libs_of "$(command -v nft)"); do
        mkdir -p "$stage$(dirname "$l")"
        cp -L "$l" "$stage$l"
    done
    cp -r "$root/scenarios" "$stage/work/scenarios"
    # Programs the initramfs has no room for (nginx, Python) stay out; the
    # reset problem is still shown there by busybox httpd.
    rm -f "$stage"/work/scenarios/reset-problem-{nginx,python}.toml
    # The modules the harness needs, and theirs, in load order, decompressed
    # (busybox insmod reads plain .ko files). nft_counter is a module on
    # 5.10; a module built into a kernel is simply not listed.
    base=${mods%/lib/modules/$release}
    depmod -b "$base" "$release"
    : > "$stage/modules/order"
    for m in inet_diag tcp_diag nf_tables nft_counter nft_numgen nft_reject_inet nft_log nfnetlink_log; do
        { modprobe -d "$base" -S "$release" --show-depends "$m" 2>/dev/null || true; } | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        name=$(basename "$ko")
        name=${name%.xz}
        name=${name%.zst}
        case "$ko" in
            *.xz) xz -dc "$ko" > "$stage/modules/$name" ;;
            *.zst) zstd -qdc "$ko" > "$stage/modules/$name" ;;
            *) cp "$ko" "$stage/modules/$name" ;;
        esac
        echo "$name" >> "$stage/modules/order"
    done
    (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
    rm -rf "$stage"
}

status=0
ran=()
skipped=()
for s in "${series[@]}"; do
    image=$(package_for "$s")
    if [ -z "$image" ]; then
        skipped+=("$s: no Debian kernel package")
        continue
    fi
    mapfile -t pkgs < <(packages_of "$image")
    if printf '%s\n' "${pkgs[@]}" | grep -q '^linux-binary-' && ! printf '%s\n' "${pkgs[@]}" | grep -q '^linux-modules-'; then
        skipped+=("$s: $image has no modules package on this mirror")
        continue
    fi
    kdir=$work/$image
    ok=1
    for p in "${pkgs[@]}"; do
        if ! download "$p" 2>/dev/null; then
            skipped+=("$s: the mirror does not serve $p")
            ok=0
            break
        fi
    done
    [ "$ok" = 1 ] || continue
    rm -rf "$kdir" && mkdir -p "$kdir"
    for p in "${pkgs[@]}"; do
        dpkg-deb -x "$(ls -t "$work/debs/${p}"_*.deb | sed -n 1p)" "$kdir"
    done
    # Modules live under /lib/modules (up to bookworm) or /usr/lib/modules.
    mods=$(find "$kdir" -mindepth 3 -maxdepth 4 -type d -regex '.*/lib/modules/[^/]+' | sed -n 1p)
    if [ -z "$mods" ]; then
        skipped+=("$s: $image unpacked without a modules directory")
        continue
    fi
    release=$(basename "$mods")
    # vmlinuz is in /boot, or (7.x) beside the modules; a missing /boot is fine.
    vmlinuz=$({ find "$kdir/boot" "$mods" -maxdepth 1 -name 'vmlinuz*' 2>/dev/null || true; } | sed -n 1p)
    if [ -z "$vmlinuz" ]; then
        skipped+=("$s: $image has no vmlinuz")
        continue
    fi
    echo "--- $release: initramfs" >&2
    build_initramfs "$kdir" "$mods" "$release" "$work/$release.initrd"
    echo "--- $release: boot under qemu -accel tcg and run every scenario" >&2
    log=$work/$release.console
    # A guest kernel can panic while booting under software emulation (seen
    # once with 6.12 in get_random_u64, not again in the next ten boots):
    # that is the emulator, not the kernel under test, so boot once more.
    for attempt in 1 2; do
        start=$(date +%s)
        timeout 1800 qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -no-reboot \
            -kernel "$vmlinuz" -initrd "$work/$release.initrd" \
            -append "console=ttyS0 panic=-1 quiet" > "$log" 2>&1 || true
        end=$(date +%s)
        tr -d '\r' < "$log" > "$log.txt"
        if [ "$attempt" = 1 ] && ! grep -q '^@@TEARDOWN-EXIT' "$log.txt" \
            && grep -q 'Kernel panic' "$log.txt"; then
            echo "$release: the guest kernel panicked before the harness ran ($(grep -m1 'Kernel panic' "$log.txt")); booting once more" >&2
            cp "$log.txt" "$log.panic.txt"
            continue
        fi
        break
    done
    if ! grep -q '^@@TEARDOWN-ARCHIVE-END' "$log.txt"; then
        echo "$release: no results came back; the console log is $log.txt" >&2
        status=1
        continue
    fi
    unpacked=$(mktemp -d)
    sed -n '/^@@TEARDOWN-ARCHIVE-BEGIN/,/^@@TEARDOWN-ARCHIVE-END/{//!p}' "$log.txt" \
        | base64 -d | gunzip -c | tar -x -C "$unpacked"
    rm -rf "${out_captures:?}/$release"
    mv "$unpacked/reports/kernels/$release.json" "$out_reports/$release.json"
    mv "$unpacked/captures/kernels/$release" "$out_captures/$release"
    rm -rf "$unpacked"
    exit_line=$(grep '^@@TEARDOWN-EXIT' "$log.txt")
    echo "$release: $exit_line, $((end - start)) s in qemu; report $out_reports/$release.json" >&2
    if [ "$exit_line" != "@@TEARDOWN-EXIT 0" ]; then
        echo "$release: the catalogue did not pass; the report says which cases and why" >&2
        status=1
    fi
    ran+=("$out_reports/$release.json")
done

# This host, for the comparison.
host=$out_reports/host-$(uname -r).json
if ! "$bin" run --quiet --report "$host" --captures "$out_captures/host-$(uname -r)" >/dev/null; then
    echo "this host: the catalogue did not pass (see $host)" >&2
    status=1
fi
echo "--- compare (the Debian kernels, then this host)" >&2
"$bin" compare "${ran[@]}" "$host" || true
for s in "${skipped[@]}"; do echo "skipped $s" >&2; done
echo "reports: $out_reports" >&2
exit $status
