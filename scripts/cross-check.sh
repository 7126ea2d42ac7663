#!/usr/bin/env bash
# cross-check.sh: proves, as far as an x86-64 Linux machine can, that the package builds beyond
# x86-64. With the toolchain's clang it checks the C kernels (Sources/CAconKernels, and for step 1
# also Sources/CDepthwiseKernels, Sources/CWinogradKernels and Sources/CLayerKernels):
#   1. syntax and types for aarch64 (--target=aarch64-linux-gnu, headers from apt's
#      libc6-dev-arm64-cross in /usr/aarch64-linux-gnu): the portable and NEON variants;
#   2. the portable variant alone (ACON_PORTABLE_ONLY) for x86-64 and aarch64, and that its
#      preprocessed source has no x86 builtin, cpuid call or target attribute left;
#   3. the NEON variant compiled to an aarch64 object, which must contain vector FMAs (fmla);
#   4. with qemu-aarch64 and aarch64-linux-gnu-gcc (apt: qemu-user gcc-aarch64-linux-gnu), runs
#      scripts/cross-check/kernel-bits.c on both architectures: every variant's outputs hashed,
#      portable(aarch64) = portable(x86-64) and NEON = AVX2, bit for bit;
#   5. a type check of TensorCore's Swift sources for aarch64-unknown-linux-gnu, which needs an
#      aarch64 Swift SDK (the Linux toolchain has x86-64 modules only): skipped, and said, without.
# Step 4 is skipped (and said) without its tools, except under CI=true, where that fails.
#
# Usage: scripts/cross-check.sh
# Environment:
#   CLANG  the clang to use (default: the one beside `swift` on PATH, else /opt/swift/usr/bin/clang)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${CLANG:-} ]]; then
  CLANG=/opt/swift/usr/bin/clang
  if swift_bin=$(command -v swift) && [[ -x $(dirname "$(readlink -f "$swift_bin")")/clang ]]; then
    CLANG=$(dirname "$(readlink -f "$swift_bin")")/clang
  fi
fi
sysroot=/usr/aarch64-linux-gnu
a64=(--target=aarch64-linux-gnu --sysroot="$sysroot")
x64=(--target=x86_64-linux-gnu)
cflags=(-std=gnu11 -Wall -Wextra -Werror -ISources/CAconKernels/include)
src=Sources/CAconKernels/AconKernels.c
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

if [[ ! -f $sysroot/include/stdlib.h ]]; then
  echo "error: no aarch64 C headers in $sysroot; install them: apt-get install libc6-dev-arm64-cross" >&2
  exit 1
fi
echo "clang: $CLANG ($("$CLANG" --version | head -1))"

# 1. aarch64, default variants (portable and NEON).
if "$CLANG" "${a64[@]}" "${cflags[@]}" -fsyntax-only "$src"; then
  ok "C kernels, aarch64-linux-gnu: syntax and types (portable + NEON)"
else
  fail "C kernels do not compile for aarch64-linux-gnu"
fi

# 1b. The depthwise convolution kernels (Sources/CDepthwiseKernels: AVX2+FMA and AVX-512 on x86-64
# only, a portable path everywhere), every file, for aarch64.
if "$CLANG" "${a64[@]}" -std=gnu11 -Wall -Wextra -Werror -ISources/CDepthwiseKernels/include -fsyntax-only \
  Sources/CDepthwiseKernels/*.c; then
  ok "depthwise kernels, aarch64-linux-gnu: syntax and types"
else
  fail "the depthwise kernels do not compile for aarch64-linux-gnu"
fi

# 1c. The Winograd transforms (Sources/CWinogradKernels: an AVX-512 copy on x86-64 only) and the layer
# loops (Sources/CLayerKernels: BatchNorm's AVX-512 copy and max-pooling's SSE select on x86-64 only,
# portable code everywhere), for aarch64 and x86-64.
for target in "CWinogradKernels:Winograd transforms" "CLayerKernels:layer loops"; do
  dir=${target%%:*} what=${target#*:}
  for flags in "${a64[*]}" "${x64[*]}"; do
    # shellcheck disable=SC2086
    if "$CLANG" $flags -std=gnu11 -Wall -Wextra -Werror -ISources/$dir/include -fsyntax-only Sources/$dir/*.c; then
      ok "$what, ${flags%% *}: syntax and types"
    else
      fail "the $what do not compile for ${flags%% *}"
    fi
  done
done

# 2. The portable variant alone, for both architectures; nothing x86-specific survives.
for arch in x86_64 aarch64; do
  if [[ $arch == x86_64 ]]; then flags=("${x64[@]}"); else flags=("${a64[@]}"); fi
  if "$CLANG" "${flags[@]}" "${cflags[@]}" -DACON_PORTABLE_ONLY -fsyntax-only "$src"; then
    ok "C kernels, $arch, ACON_PORTABLE_ONLY: syntax and types"
  else
    fail "the portable variant alone does not compile for $arch"
  fi
  "$CLANG" "${flags[@]}" "${cflags[@]}" -DACON_PORTABLE_ONLY -E -P "$src" -o "$work/portable-$arch.i"
  if grep -nE '__builtin_ia32|__builtin_cpu_|target\(|arm_neon' "$work/portable-$arch.i" >"$work/leak"; then
    fail "the portable-only build of $arch still has target-specific code:"
    head -5 "$work/leak"
  else
    ok "C kernels, $arch, ACON_PORTABLE_ONLY: no x86 builtin, cpuid or target attribute"
  fi
done

# 3. The NEON variant as an aarch64 object, with its vector FMAs.
objdump_bin=$(dirname "$CLANG")/llvm-objdump
[[ -x $objdump_bin ]] || objdump_bin=$(command -v llvm-objdump || command -v aarch64-linux-gnu-objdump || true)
if "$CLANG" "${a64[@]}" "${cflags[@]}" -O2 -c "$src" -o "$work/kernels-a64.o"; then
  if [[ -n $objdump_bin ]]; then
    fmla=$("$objdump_bin" -d "$work/kernels-a64.o" | grep -cE 'fmla\s+v[0-9]+\.4s' || true)
    if [[ $fmla -gt 0 ]]; then ok "C kernels, aarch64 object (-O2 -c): $fmla NEON fmla instructions"
    else fail "the aarch64 object has no NEON fmla: the NEON variant is not there"; fi
  else
    ok "C kernels, aarch64 object (-O2 -c) (no objdump to look inside)"
  fi
else
  fail "the C kernels do not compile to an aarch64 object"
fi

# 4. The same bits on both architectures, run under qemu-aarch64.
if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
  test_src=scripts/cross-check/kernel-bits.c
  "$CLANG" "${x64[@]}" "${cflags[@]}" -O2 "$src" "$test_src" -lm -o "$work/bits-x64"
  "$CLANG" "${a64[@]}" "${cflags[@]}" -O2 -c "$test_src" -o "$work/bits-a64.o"
  aarch64-linux-gnu-gcc -static "$work/kernels-a64.o" "$work/bits-a64.o" -lm -o "$work/bits-a64"
  "$CLANG" "${x64[@]}" "${cflags[@]}" -DACON_PORTABLE_ONLY -O2 "$src" "$test_src" -lm -o "$work/bits-x64-portable"
  status=0
  "$work/bits-x64" >"$work/x64.txt" || status=$?
  "$work/bits-x64-portable" >"$work/x64p.txt" || status=$?
  qemu-aarch64 "$work/bits-a64" >"$work/a64.txt" || status=$?
  echo "x86-64:"; sed 's/^/  /' "$work/x64.txt"
  echo "x86-64, ACON_PORTABLE_ONLY:"; sed 's/^/  /' "$work/x64p.txt"
  echo "aarch64 (qemu):"; sed 's/^/  /' "$work/a64.txt"
  [[ $status -eq 0 ]] || fail "kernel-bits reported values outside the tolerance (see above)"
  hashes() { awk -v v="$2" '$1 == v { print $2, $3 }' "$1"; }
  p64=$(hashes "$work/x64.txt" portable)
  if [[ -n $p64 && $p64 == "$(hashes "$work/a64.txt" portable)" && $p64 == "$(hashes "$work/x64p.txt" portable)" ]]; then
    ok "portable variant: the same bits on x86-64, x86-64 portable-only and aarch64"
  else
    fail "the portable variant's bits differ between builds or architectures"
  fi
  neon=$(hashes "$work/a64.txt" neon)
  avx2=$(hashes "$work/x64.txt" avx2)
  if [[ -z $neon ]]; then
    fail "the aarch64 build did not run the NEON variant"
  elif [[ -z $avx2 ]]; then
    echo "skip: this CPU has no AVX2, so NEON's bits cannot be compared with AVX2's here"
  elif [[ $neon == "$avx2" ]]; then
    ok "NEON (aarch64, qemu) gives AVX2's bits (x86-64): kernels, sums, exp and sigmoid"
  else
    fail "NEON's bits differ from AVX2's"
  fi
elif [[ ${CI:-} == true ]]; then
  fail "qemu-aarch64 or aarch64-linux-gnu-gcc missing (apt-get install qemu-user gcc-aarch64-linux-gnu)"
else
  echo "skip: running the kernels for aarch64 needs qemu-aarch64 and aarch64-linux-gnu-gcc (apt-get install qemu-user gcc-aarch64-linux-gnu)"
fi

# 5. TensorCore's Swift sources for aarch64, if this toolchain has an aarch64 Swift SDK.
swiftc_bin=$(dirname "$CLANG")/swiftc
if [[ -x $swiftc_bin ]]; then
  echo 'let x = 1' >"$work/probe.swift"
  if "$swiftc_bin" -typecheck -target aarch64-unknown-linux-gnu "$work/probe.swift" >"$work/probe.log" 2>&1; then
    blas_inc=$(pkg-config --variable=includedir openblas 2>/dev/null || true)
    if "$swiftc_bin" -typecheck -target aarch64-unknown-linux-gnu -I Sources/CBLAS \
      ${blas_inc:+-Xcc -I"$blas_inc"} Sources/TensorCore/*.swift; then
      ok "TensorCore (Swift), aarch64-unknown-linux-gnu: type check"
    else
      fail "TensorCore's Swift sources do not type-check for aarch64"
    fi
  else
    echo "skip: no aarch64 Swift SDK in this toolchain ($(grep -m1 -o "could not find module '[A-Za-z_]*' for target '[^']*'" "$work/probe.log" || head -1 "$work/probe.log")), so TensorCore's Swift sources are not type-checked for aarch64"
  fi
fi

if [[ $failures -gt 0 ]]; then
  echo "cross-check: $failures check(s) failed"
  exit 1
fi
echo "cross-check: all checks passed"
