#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ (with AddressSanitizer) and runs each for a fixed number
# of executions over its checked-in seed corpus (Fuzz/Corpus/TARGET). New inputs that libFuzzer
# finds go to a scratch corpus, not into the repository. A crash, a leak, a timeout (10 s) or an
# out-of-memory (2 GB) stops the run, leaves the input in fuzz-artifacts/ and exits non-zero:
# reproduce it with `Fuzz/.build/release/fuzz-TARGET fuzz-artifacts/FILE`, fix it, and add the
# input as a regression test (Tests/TrainingTests/FuzzRegressionTests.swift).
#
# Inputs may be up to 8 KiB for idx and cifar, 64 KiB for image (JPEG and PNG files from
# Tests/ImageDataTests/Fixtures/decode; it must report that some decoded), and 1 MiB for safetensors, whose corpus holds whole
# seed-model state dicts (520-650 KB): fuzz-safetensors must also report at exit that some inputs
# loaded strictly into a seed network (the copy path), or the run fails.
#
# Usage: scripts/fuzz.sh [RUNS] [TARGET ...]     RUNS defaults to 1000000;
#        TARGET is idx, cifar, safetensors or image, or fuzz-idx, … (default: all four).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-1000000}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(idx cifar safetensors image)
for i in "${!targets[@]}"; do
  targets[i]="${targets[i]#fuzz-}"
  case "${targets[i]}" in
  idx | cifar | safetensors | image) ;;
  *)
    echo "fuzz.sh: unknown target '${targets[i]}' (idx, cifar, safetensors or image)" >&2
    exit 2
    ;;
  esac
done

# SwiftPM's --sanitize=fuzzer links libFuzzer but leaves the package's modules without coverage
# instrumentation, so the compiler gets -sanitize=fuzzer,address itself (and -parse-as-library:
# libFuzzer brings the program's main).
echo "== building the fuzz targets (swift build --sanitize=fuzzer --sanitize=address, release)"
build_log=$(mktemp)
if ! swift build --package-path Fuzz -c release --sanitize=fuzzer --sanitize=address \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library >"$build_log" 2>&1; then
  cat "$build_log"
  echo "fuzz.sh: the fuzz targets did not build" >&2
  exit 1
fi
rm -f "$build_log"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p fuzz-artifacts
status=0
for t in "${targets[@]}"; do
  max_len=8192
  [ "$t" != safetensors ] || max_len=1048576
  [ "$t" != image ] || max_len=65536
  mkdir -p "$scratch/$t"
  echo "== fuzz-$t: $runs executions"
  start=$(date +%s)
  if Fuzz/.build/release/fuzz-"$t" "$scratch/$t" "Fuzz/Corpus/$t" -runs="$runs" -max_len="$max_len" \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="fuzz-artifacts/$t-" -print_final_stats=1 \
    >"$scratch/$t.log" 2>&1; then
    result="ok"
  else
    result="FAILED (input in fuzz-artifacts/)"
    status=1
    tail -n 60 "$scratch/$t.log"
  fi
  execs=$(grep -E "stat::number_of_executed_units" "$scratch/$t.log" | awk '{print $2}' | tail -n 1)
  echo "fuzz-$t: ${execs:-?} executions in $(($(date +%s) - start)) s, $(ls "$scratch/$t" | wc -l) new corpus inputs: $result"
  if [ "$t" = image ] && [ "$result" = ok ]; then
    # "fuzz-image: N of M inputs decoded and transformed", printed at exit.
    decoded=$(grep -E "^fuzz-image: [0-9]+ of [0-9]+ inputs decoded" "$scratch/$t.log" | tail -n 1)
    echo "${decoded:-fuzz-image: no decode count printed}"
    if [ -z "$decoded" ] || [ "$(echo "$decoded" | awk '{print $2}')" -eq 0 ]; then
      echo "fuzz.sh: no input decoded: the images in Fuzz/Corpus/image are missing" >&2
      status=1
    fi
  fi
  if [ "$t" = safetensors ] && [ "$result" = ok ]; then
    # "fuzz-safetensors: N of M inputs loaded strictly into a seed network", printed at exit.
    loads=$(grep -E "^fuzz-safetensors: [0-9]+ of [0-9]+ inputs loaded strictly" "$scratch/$t.log" | tail -n 1)
    echo "${loads:-fuzz-safetensors: no strict-load count printed}"
    if [ -z "$loads" ] || [ "$(echo "$loads" | awk '{print $2}')" -eq 0 ]; then
      echo "fuzz.sh: no input reached a successful strict load: the seed-model files in Fuzz/Corpus/safetensors are missing or no longer fit the networks (rerun Fuzz/make_corpus.py)" >&2
      status=1
    fi
  fi
done
if [ "$status" -eq 0 ]; then rmdir fuzz-artifacts 2>/dev/null || true; fi
exit "$status"
