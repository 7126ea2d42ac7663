#!/usr/bin/env bash
# sanitizers.sh: the test suite under AddressSanitizer and ThreadSanitizer.
#
# ASan (with LeakSanitizer) catches heap and stack overflows, use-after-free and leaks in our
# Swift and C code (Sources/CAconKernels is compiled with -fsanitize too); TSan catches data races
# between the workers of `parallelFor` (im2col/col2im, the Conv2D gathers, BatchNorm, the ACON
# kernels) and anywhere else threads meet. TSan understands libdispatch's concurrentPerform
# (it intercepts dispatch_apply), so it knows that the caller's writes before a `parallelFor`
# happen before the workers' reads and the workers' writes before whatever follows it, and a
# body that writes outside its own indices is reported (checked by making the chunks overlap by
# one element: im2col, col2im, Conv2D's gather and scatter, BatchNorm and the C ACON kernels
# were then reported).
#
# Each sanitizer builds in its own scratch path (.build-asan, .build-tsan; never .build); the
# output goes to the terminal and to sanitizers.log there. A run fails on a build error, a
# failing test or any sanitizer report (the test process then exits non-zero).
#
#   scripts/sanitizers.sh                  ASan, then TSan, over the whole suite
#   scripts/sanitizers.sh --asan | --tsan  one of them over the whole suite
#   scripts/sanitizers.sh --tsan-kernels   TSan over the tests of the parallel kernels only (by hand)
#
# Suppressions: scripts/lsan.supp names leaks of XCTest and Foundation at exit (reference
# cycles, weak-reference side tables), none in our code. TSan needs none.
#
# OpenBLAS: its worker threads are not instrumented, so TSan neither records their memory
# accesses nor reports on them; that is why sgemm calls need no suppression. OPENBLAS_NUM_THREADS
# is not set because it would change nothing: `Threads.count` defaults to the number of cores
# (sysconf, not OpenBLAS's environment) and sets OpenBLAS's thread count to match on first use,
# so our `parallelFor` still runs 2 workers on a 2-core machine and OpenBLAS still gets 2.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

runs=()
case "${1:-}" in
  "") runs=(asan tsan) ;;
  --asan) runs=(asan) ;;
  --tsan) runs=(tsan) ;;
  --tsan-kernels) runs=(tsan-kernels) ;;
  -h | --help) usage; exit 0 ;;
  *) echo "sanitizers.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac

# The tests of the parallel kernels: parallelFor itself, im2col/col2im, Conv2D (its batch
# gather/scatter and ReLU over a large tensor, with 1 and 2 threads), BatchNorm's per-channel
# loops, and all of ACONTests (the fused C kernels, incl. 1 vs 2 threads for every β layout and
# the portable variant, and Meta-ACON's parallel means).
kernel_filters=(
  --filter '^TensorCoreTests\.(ThreadsTests|Im2ColTests)/'
  --filter '^NNTests\.(Conv2DTests|BatchNormTests|GroupedConv2DTests|DepthwiseConv2DTests|SiLUAndPoolingTests|ChannelOpsTests)/'
  --filter '^ACONTests\.'
)

export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

summary=()
all_ok=1
total_passed=0
total_failed=0

# run NAME SANITIZER SCRATCH [FILTER...]: build, test, and add a line to the summary.
run() {
  local name=$1 sanitizer=$2 scratch=$3
  shift 3
  local log="$scratch/sanitizers.log" start status=0
  mkdir -p "$scratch"
  : >"$log"
  echo "== $name: swift build --build-tests --sanitize=$sanitizer --scratch-path $scratch"
  start=$SECONDS
  if swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" 2>&1 | tee -a "$log"; then
    status=0
  else
    status=$?
  fi
  local built=$((SECONDS - start))
  if [ "$status" -ne 0 ]; then
    summary+=("$(printf '%-13s FAIL  build failed (exit %d) after %ds' "$name" "$status" "$built")")
    all_ok=0
    return
  fi
  echo "== $name: swift test --sanitize=$sanitizer --scratch-path $scratch --skip-build $*"
  start=$SECONDS
  if swift test --sanitize="$sanitizer" --scratch-path "$scratch" --skip-build "$@" 2>&1 | tee -a "$log"; then
    status=0
  else
    status=$?
  fi
  local tested=$((SECONDS - start))
  # XCTest's overall total is the last "Executed" line ("Executed 147 tests, with 5 tests skipped
  # and 0 failures …" when some skip); its failures count failed assertions, so failed tests are
  # counted by their own lines.
  local total executed=0 failed reports
  total=$(grep -E "Executed [0-9]+ tests?, with " "$log" | tail -n 1 || true)
  if [ -n "$total" ]; then
    executed=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$total")
  fi
  failed=$(grep -cE "^Test Case '.*' failed \(" "$log" || true)
  reports=$(grep -cE "^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: (Address|Leak)Sanitizer)" "$log" || true)
  local verdict=PASS
  if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$reports" -ne 0 ] || [ "$executed" -eq 0 ]; then
    verdict=FAIL
    all_ok=0
  fi
  local passed=$((executed > failed ? executed - failed : 0))
  total_passed=$((total_passed + passed))
  # A run that fails with no failed test (a sanitizer report, a crash) counts as one failure.
  if [ "$verdict" = FAIL ] && [ "$failed" -eq 0 ]; then
    total_failed=$((total_failed + 1))
  else
    total_failed=$((total_failed + failed))
  fi
  summary+=("$(printf '%-13s %s  %d tests, %d failed, %d sanitizer reports (exit %d); build %ds, tests %ds' \
    "$name" "$verdict" "$executed" "$failed" "$reports" "$status" "$built" "$tested")")
  # The failed tests, and where the reports came from (one line per place, with its count).
  while IFS= read -r line; do summary+=("              $line"); done < <(
    grep -E "^Test Case '.*' failed \(" "$log" | head -n 20 || true
    grep -E "^SUMMARY: [A-Za-z]+Sanitizer" "$log" | sort | uniq -c | sort -rn | head -n 20 || true)
}

for r in "${runs[@]}"; do
  case "$r" in
    asan) run asan address .build-asan ;;
    tsan) run tsan thread .build-tsan ;;
    tsan-kernels) run tsan-kernels thread .build-tsan "${kernel_filters[@]}" ;;
  esac
done

echo
echo "== sanitizers summary"
printf '%s\n' "${summary[@]}"
# A plain closing line: tests that passed under the sanitizers, and those that failed.
echo "sanitizers: $total_passed passed, $total_failed failed"
[ "$all_ok" -eq 1 ]
