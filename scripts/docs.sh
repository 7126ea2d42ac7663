#!/usr/bin/env bash
# Builds the DocC documentation of the public modules (TensorCore, NN, ACON, Training) with
# swift-docc-plugin, every DocC warning an error: a broken ``symbol`` link, a parameter documented
# under a name the function doesn't have, an undocumented parameter in a `- Parameters:` list.
# The archives land in .build/plugins/Swift-DocC/outputs/<Module>.doccarchive.
#
#   scripts/docs.sh                   the four modules
#   scripts/docs.sh --check-article   also builds and runs the code of the getting-started article
#                                     (Sources/Training/Training.docc/GettingStarted.md) as an
#                                     executable package that depends on this one by path, and
#                                     checks that its loss falls and its test accuracy beats chance
set -euo pipefail
cd "$(dirname "$0")/.."

modules=(TensorCore NN ACON Training)
check_article=0
for arg in "$@"; do
  case "$arg" in
    --check-article) check_article=1 ;;
    *) echo "usage: scripts/docs.sh [--check-article]" >&2; exit 2 ;;
  esac
done

echo "== DocC: ${modules[*]} (warnings are errors)"
target_args=()
for m in "${modules[@]}"; do target_args+=(--target "$m"); done
start=$SECONDS
swift package generate-documentation "${target_args[@]}" --warnings-as-errors
for m in "${modules[@]}"; do
  archive=".build/plugins/Swift-DocC/outputs/$m.doccarchive"
  [ -f "$archive/data/documentation/$(echo "$m" | tr '[:upper:]' '[:lower:]').json" ] \
    || { echo "error: $archive has no root page for $m" >&2; exit 1; }
done
echo "documentation built in $((SECONDS - start)) s"

[ "$check_article" = 1 ] || exit 0

echo "== the getting-started article's code, built and run against this package"
article=Sources/Training/Training.docc/GettingStarted.md
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/acon-docs-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/Sources/first-steps"
identity=$(basename "$root")
cat > "$work/Package.swift" <<MANIFEST
// swift-tools-version:6.1
import PackageDescription

let package = Package(
  name: "first-steps",
  dependencies: [.package(path: "$root")],
  targets: [
    .executableTarget(
      name: "first-steps",
      dependencies: [
        .product(name: "TensorCore", package: "$identity"),
        .product(name: "NN", package: "$identity"),
        .product(name: "ACON", package: "$identity"),
        .product(name: "Training", package: "$identity"),
      ])
  ]
)
MANIFEST
# Every swift code block of the article, in order, except the manifest excerpt.
awk '
  /^```swift$/ { inblock = 1; first = 1; keep = 1; next }
  /^```$/ && inblock { inblock = 0; next }
  inblock {
    if (first && $0 ~ /^\/\/ Package\.swift/) keep = 0
    first = 0
    if (keep) print
  }
' "$article" > "$work/Sources/first-steps/main.swift"
lines=$(wc -l < "$work/Sources/first-steps/main.swift")
[ "$lines" -gt 20 ] || { echo "error: found only $lines lines of code in $article" >&2; exit 1; }
(cd "$work" && swift build --product first-steps)
out=$("$work/.build/debug/first-steps")
echo "$out"
# The article says the loss falls (about 2.3 to about 1) and the test accuracy is well above
# chance (0.1), near 0.7: check both loosely, the figures vary with OpenBLAS's thread count.
echo "$out" | awk '
  /^step [0-9]+: loss / { loss = $NF + 0; if (!seen++) first = loss }
  /^test accuracy / { acc = $3 + 0 }
  END {
    if (!seen || loss > 0.75 * first) { printf "error: the loss went from %s to %s\n", first, loss; exit 1 }
    if (acc < 0.5) { printf "error: test accuracy %s\n", acc; exit 1 }
    printf "article check: loss %.3f -> %.3f, test accuracy %.3f\n", first, loss, acc
  }' >&2
