#!/usr/bin/env bash
# An aarch64 Python with this project's pinned dependencies, for the numerics probe under
# qemu-aarch64 on an x86-64 Debian/Ubuntu machine (make probe-arm; CI's probe step).
#
#   tools/aarch64_sysroot.sh [ROOT]     (default: $MNIST_VAE_AARCH64_ROOT or ~/.cache/mnist-vae/aarch64)
#
# ROOT/sysroot: Debian's arm64 python3.11 and the libraries it and torch load, unpacked from
# their .debs (no binfmt, no chroot: qemu-aarch64 -L ROOT/sysroot serves them), plus the files
# torch's CPU detection reads under qemu-user, which answers them from the sysroot: an aarch64
# /proc/cpuinfo and MIDR registers of an Arm Neoverse N1 (implementer 0x41, part 0xd0c); without
# them cpuinfo segfaults. ROOT/site: requirements.txt's aarch64 wheels (uv --python-platform).
# Idempotent: a finished ROOT (ROOT/.complete) is left as it is. Needs root for apt-get.
set -euo pipefail
ROOT="${1:-${MNIST_VAE_AARCH64_ROOT:-$HOME/.cache/mnist-vae/aarch64}}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$ROOT/.complete" ] && { echo "$ROOT"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$ROOT"
command -v qemu-aarch64 >/dev/null || apt-get install -y -qq qemu-user >/dev/null
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
apt-get update -qq
pkgs=(python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 gcc-12-base
      libstdc++6 libgomp1 zlib1g libffi8 libssl3 libexpat1 libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6
      libtinfo6 libreadline8 libuuid1 libcrypt1 libnsl2 libtirpc3 libdb5.3 libgssapi-krb5-2 libk5crypto3
      libkeyutils1 libkrb5-3 libkrb5support0 libcom-err2)
debs="$ROOT/debs"
mkdir -p "$debs" "$ROOT/sysroot"
(cd "$debs" && apt-get download -qq "${pkgs[@]/%/:arm64}")
for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$ROOT/sysroot"; done
mkdir -p "$ROOT/sysroot/proc"
cpuinfo="$ROOT/sysroot/proc/cpuinfo"
: > "$cpuinfo"
for cpu in 0 1; do
  printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$cpu" >> "$cpuinfo"
  regs="$ROOT/sysroot/sys/devices/system/cpu/cpu$cpu/regs/identification"
  mkdir -p "$regs"
  echo 0x00000000413fd0c1 > "$regs/midr_el1"
done
printf '0-1\n' > "$ROOT/sysroot/sys/devices/system/cpu/possible"
printf '0-1\n' > "$ROOT/sysroot/sys/devices/system/cpu/present"
uv="$REPO/.venv/bin/uv"
[ -x "$uv" ] || uv=uv
"$uv" pip install --quiet --no-deps --target "$ROOT/site" --python-platform aarch64-manylinux_2_28 \
  --python-version 3.11 -r "$REPO/requirements.txt"
rm -rf "$debs"
touch "$ROOT/.complete"
echo "$ROOT"
