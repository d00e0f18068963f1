#!/usr/bin/env bash
# `just kernel-matrix`: runs every scenario on Debian's packaged Linux
# kernels, booted under qemu with software emulation, and brings the
# reports back to reports/kernels/ and the captures to captures/kernels/.
#
# Kernels are fetched with `apt-get download` through a private apt
# configuration under target/kernel-matrix/ (the host's apt sources, lists
# and installed packages are not touched) and never installed. Each kernel
# boots an initramfs holding busybox, the teardown binary, nft, the shared
# libraries they need, the kernel's own modules for sock_diag and nftables,
# and scenarios/.
#
# Usage: harness/kernels/kernel-matrix.sh [SERIES...]   (default: 6.1 6.12)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/target/kernel-matrix
bin=$root/target/release/teardown
series=("$@")
[ ${#series[@]} -gt 0 ] || series=(6.1 6.12)

mkdir -p "$work"/apt/{lists/partial,cache/archives/partial} "$work/debs"
cat > "$work/apt/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
SRC
apt_opts=(
    -o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
    -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
)
echo "--- package lists (private to $work/apt)" >&2
apt-get "${apt_opts[@]}" -qq update

# The newest package of a series: linux-image-6.1.0-N-amd64 (bookworm) or
# linux-image-6.12.N+deb12-amd64 (bookworm-backports).
package_for() {
    local pattern
    case "$1" in
        6.1) pattern='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
        *) pattern="^linux-image-${1//./\\.}\\.[0-9]+\\+deb12-amd64\$" ;;
    esac
    apt-cache "${apt_opts[@]}" search --names-only "$pattern" | cut -d' ' -f1 | sort -V | tail -1
}

cd "$work/debs"
apt-get "${apt_opts[@]}" -qq download busybox-static
busybox_deb=$(ls -t busybox-static_*.deb | head -1)
packages=()
for s in "${series[@]}"; do
    p=$(package_for "$s")
    [ -n "$p" ] || { echo "no Debian kernel package found for series $s" >&2; exit 1; }
    packages+=("$p")
    ls "${p}"_*.deb >/dev/null 2>&1 || apt-get "${apt_opts[@]}" -qq download "$p"
done
cd "$root"

# Shared libraries of a binary, with the dynamic loader.
libs_of() { ldd "$1" | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}'; }

build_initramfs() { # $1 = unpacked kernel package, $2 = release, $3 = output
    local kdir=$1 release=$2 out=$3 stage
    stage=$(mktemp -d)
    mkdir -p "$stage"/{bin,usr/bin,usr/sbin,proc,sys,dev,tmp,modules,work}
    dpkg-deb --fsys-tarfile "$work/debs/$busybox_deb" | tar -x -C "$stage" ./bin/busybox
    cp "$root/harness/kernels/init" "$stage/init"
    chmod +x "$stage/init"
    cp "$bin" "$stage/usr/bin/teardown"
    cp "$(command -v nft)" "$stage/usr/sbin/nft"
    for l in $(libs_of "$bin"; libs_of "$(command -v nft)"); do
        mkdir -p "$stage$(dirname "$l")"
        cp -L "$l" "$stage$l"
    done
    cp -r "$root/scenarios" "$stage/work/scenarios"
    # The modules the harness needs, and theirs, in load order, decompressed
    # (busybox insmod reads plain .ko files).
    depmod -b "$kdir" "$release"
    : > "$stage/modules/order"
    for m in inet_diag tcp_diag nf_tables nft_numgen nft_reject_inet; do
        modprobe -d "$kdir" -S "$release" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        name=$(basename "$ko"); name=${name%.xz}
        if [[ $ko == *.xz ]]; then xz -dc "$ko" > "$stage/modules/$name"; else cp "$ko" "$stage/modules/$name"; fi
        echo "$name" >> "$stage/modules/order"
    done
    (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
    rm -rf "$stage"
}

mkdir -p reports/kernels captures/kernels
status=0
for p in "${packages[@]}"; do
    deb=$(ls -t "$work/debs/${p}"_*.deb | head -1)
    kdir=$work/$p
    rm -rf "$kdir" && mkdir -p "$kdir" && dpkg-deb -x "$deb" "$kdir"
    release=$(ls "$kdir/lib/modules")
    echo "--- $release: initramfs" >&2
    build_initramfs "$kdir" "$release" "$work/$release.initrd"
    echo "--- $release: boot under qemu -accel tcg and run every scenario" >&2
    log=$work/$release.console
    start=$(date +%s)
    timeout 1800 qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -no-reboot \
        -kernel "$kdir/boot/vmlinuz-$release" -initrd "$work/$release.initrd" \
        -append "console=ttyS0 panic=-1 quiet" > "$log" 2>&1 || true
    end=$(date +%s)
    tr -d '\r' < "$log" > "$log.txt"
    if ! grep -q '^@@TEARDOWN-ARCHIVE-END' "$log.txt"; then
        echo "$release: no results came back; the console log is $log.txt" >&2
        status=1
        continue
    fi
    sed -n '/^@@TEARDOWN-ARCHIVE-BEGIN/,/^@@TEARDOWN-ARCHIVE-END/{//!p}' "$log.txt" \
        | base64 -d | gunzip -c | tar -x -C "$root"
    echo "$release: $(grep '^@@TEARDOWN-EXIT' "$log.txt"), $((end - start)) s in qemu; report reports/kernels/$release.json" >&2
done

# This host, for the comparison.
host=reports/kernels/host-$(uname -r).json
"$bin" run --quiet --report "$host" --captures "captures/kernels/host-$(uname -r)" >/dev/null || true
echo "--- compare (A, B: the Debian kernels; last: this host)" >&2
reports=()
for p in "${packages[@]}"; do
    reports+=("reports/kernels/$(ls "$work/$p/lib/modules").json")
done
"$bin" compare "${reports[@]}" "$host" || true
exit $status
