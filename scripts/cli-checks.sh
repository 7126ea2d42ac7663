#!/usr/bin/env bash
# cli-checks.sh: runs the acon-train binary on bad input and checks what a user sees: a non-zero
# exit, exactly one line on stderr that starts with "error:" and names the file, tensor or option
# at fault, and no checkpoint or partial file left behind. Also checks that `evaluate` picks the
# data set a checkpoint records and prints the JSON object the README documents, and that
# `compare` cut short by --max-steps reports only the epochs that ran, and that a write that fails
# (the log, stdout, compare's files) stops the run with an error naming it.
#
# Also runs the model zoo through summary, train, --resume, evaluate (of a DataParallel file
# too), --init and compare, and checks the batch-1 BatchNorm error, and that `train` on a data
# set of Fashion-MNIST's size keeps its peak resident memory under 3× the budget `summary` prints.
#
# Usage (builds acon-train in release if the binary is missing):
#   scripts/cli-checks.sh
# Environment:
#   ACON_TRAIN  use this acon-train binary instead (it is then never built)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${ACON_TRAIN:-.build/release/acon-train}
if [[ -z ${ACON_TRAIN:-} && ! -x $bin ]]; then swift build -c release --product acon-train >/dev/null; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# expect_error NAME PATTERN -- COMMAND...: COMMAND must exit non-zero with one stderr line
# "error: ..." that matches the extended regex PATTERN.
expect_error() {
  local name=$1 pattern=$2
  shift 3
  local status=0
  "$@" >"$work/out" 2>"$work/err" || status=$?
  local lines
  lines=$(wc -l <"$work/err")
  if [[ $status -eq 0 ]]; then
    echo "FAIL $name: exit status 0"; failures=$((failures + 1)); return
  fi
  if [[ $lines -ne 1 ]] || ! grep -qE "^error: " "$work/err" || ! grep -qE -e "$pattern" "$work/err"; then
    echo "FAIL $name: expected one 'error:' line matching /$pattern/, got $lines line(s):"
    sed 's/^/    /' "$work/err"
    failures=$((failures + 1)); return
  fi
  echo "ok   $name (exit $status): $(cat "$work/err")"
}

expect_ok() {
  local name=$1
  shift
  if ! "$@" >"$work/out" 2>"$work/err"; then
    echo "FAIL $name: exit non-zero:"; sed 's/^/    /' "$work/err"; failures=$((failures + 1)); return 1
  fi
  echo "ok   $name"
}

# Missing data sets: the message says how to get one.
expect_error "missing Fashion-MNIST" "dataset-fashion-mnist|--data synthetic" -- \
  "$bin" train --data fashion-mnist --data-dir "$work/none" --max-steps 1
expect_error "a --data-dir without a data set is not a silent fallback" "$work/none" -- \
  "$bin" train --data-dir "$work/none" --max-steps 1
expect_error "CIFAR-10 without --data-dir" "--data-dir" -- "$bin" train --data cifar10 --max-steps 1

# A truncated IDX file, named.
mkdir -p "$work/fm"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  printf '\x00\x00\x08\x03\x00\x00\x00\x10' | gzip >"$work/fm/$f.gz"
done
expect_error "truncated IDX" "t10k-images-idx3-ubyte.gz|train-images-idx3-ubyte.gz" -- \
  "$bin" train --data fashion-mnist --data-dir "$work/fm" --max-steps 1

# Out-of-range options, named.
expect_error "negative --lr" "--lr" -- "$bin" train --data synthetic --lr=-1 --max-steps 1
expect_error "--val-split outside --data folder" "--val-split applies to --data folder" -- "$bin" train --data synthetic --val-split 0.1 --max-steps 1
expect_error "zero --batch-size" "--batch-size" -- "$bin" train --data synthetic --batch-size 0 --max-steps 1
expect_error "unknown --model" "--model" -- "$bin" train --data synthetic --model resnet --max-steps 1
expect_error "evaluate: huge --batch-size" "--batch-size" -- \
  "$bin" evaluate --checkpoint "$work/none.safetensors" --batch-size 100000000

# Corrupt and wrong checkpoints, named; nothing written.
printf 'not a safetensors file at all' >"$work/garbage.safetensors"
expect_error "corrupt checkpoint" "garbage.safetensors" -- "$bin" evaluate --checkpoint "$work/garbage.safetensors"
expect_error "corrupt --init" "garbage.safetensors" -- \
  "$bin" train --data synthetic --init "$work/garbage.safetensors" --checkpoint "$work/x.safetensors" --max-steps 1
[[ ! -e $work/x.safetensors ]] || { echo "FAIL corrupt --init left $work/x.safetensors"; failures=$((failures + 1)); }

expect_ok "train a 2-step seed-relu checkpoint" \
  "$bin" train --data synthetic --model seed-relu --max-steps 2 --checkpoint "$work/relu.safetensors"
expect_error "checkpoint for another model (evaluate)" "relu.safetensors.*seed-relu" -- \
  "$bin" evaluate --checkpoint "$work/relu.safetensors" --model seed-aconc
expect_error "checkpoint for another model (--init)" "relu.safetensors" -- \
  "$bin" train --data synthetic --model seed-aconc --init "$work/relu.safetensors" --max-steps 1
expect_error "resume with other settings" "lr" -- \
  "$bin" train --data synthetic --model seed-relu --max-steps 3 --checkpoint "$work/relu.safetensors" --resume --lr 0.01

# evaluate: the recorded data set, and the README's JSON object.
expect_ok "evaluate --json" "$bin" evaluate --checkpoint "$work/relu.safetensors" --json
if ! python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert set(d) == {"accuracy", "loss", "examples"}, d
assert 0 <= d["accuracy"] <= 1 and d["loss"] > 0 and d["examples"] == 1000, d
' "$work/out"; then
  echo "FAIL evaluate --json printed:"; cat "$work/out"; failures=$((failures + 1))
fi
expect_ok "evaluate uses the recorded data set" "$bin" evaluate --checkpoint "$work/relu.safetensors"
grep -q "synthetic" "$work/out" || { echo "FAIL evaluate did not use the synthetic set:"; cat "$work/out"; failures=$((failures + 1)); }

# compare: --max-steps caps each run in all; the table and plot show only the epochs that ran.
expect_ok "compare cut short by --max-steps" "$bin" compare --models seed-relu,seed-aconc,seed-meta --seeds 1 --epochs 2 \
  --max-steps 3 --data synthetic --out "$work/cmp"
if ! python3 -c '
import json, sys
rows = json.load(open(sys.argv[1] + "/results.json"))
assert [r["model"] for r in rows] == ["seed-relu", "seed-aconc", "seed-meta"], rows
assert all(len(r["accuracy_per_epoch"]) == 1 and len(r["accuracy_per_epoch"][0]) == 1 for r in rows), rows
svg = open(sys.argv[1] + "/accuracy.svg").read()
assert svg.startswith("<svg") and "seed-aconc" in svg and "nan" not in svg.lower(), "accuracy.svg"
assert "after 1 epochs" in open(sys.argv[1] + "/results.md").read()
for m in ("seed-aconc", "seed-meta"):
    curves = open(sys.argv[1] + "/" + m + "-curves.svg").read()
    assert curves.count("<polyline") == 64 + 2, m + ": one curve per channel, ReLU and SiLU"
' "$work/cmp"; then
  echo "FAIL compare --max-steps outputs"; failures=$((failures + 1))
fi

# Nothing lost silently: every output the user relies on is written or the run fails, naming it.
expect_error "log on a full disk" "/dev/full" -- "$bin" train --data synthetic --model seed-relu --max-steps 2 --log /dev/full
expect_error "log in a missing directory" "$work/none/log.jsonl" -- \
  "$bin" train --data synthetic --model seed-relu --max-steps 1 --log "$work/none/log.jsonl"
expect_error "evaluate --json to a full disk" "standard output.*/dev/full" -- \
  sh -c 'exec "$@" >/dev/full' sh "$bin" evaluate --checkpoint "$work/relu.safetensors" --json
expect_error "summary to a full disk" "standard output" -- sh -c 'exec "$@" >/dev/full' sh "$bin" summary
printf 'a file, not a directory' >"$work/plain"
expect_error "compare --out is a file" "$work/plain" -- \
  "$bin" compare --models seed-relu --seeds 1 --epochs 1 --max-steps 1 --data synthetic --out "$work/plain"
mkdir -p "$work/cmp2/results.md"  # a directory where the table goes: its write must fail, named
expect_error "compare cannot write its table" "results.md" -- \
  "$bin" compare --models seed-relu --seeds 1 --epochs 1 --max-steps 1 --data synthetic --out "$work/cmp2"

# Resume on another thread count: it goes on, with a warning naming both counts and the fix.
expect_ok "train 2 steps on 1 thread" "$bin" train --data synthetic --model seed-relu --max-steps 2 --threads 1 \
  --checkpoint "$work/threads.safetensors"
expect_ok "resume it on 2 threads" "$bin" train --data synthetic --model seed-relu --max-steps 3 --threads 2 \
  --checkpoint "$work/threads.safetensors" --resume
if grep -q "^warning: .*threads.state.safetensors was written by a run with 1 thread per process (now 2).*--threads 1" "$work/err"; then
  echo "ok   resume on another thread count warns: $(cat "$work/err")"
else
  echo "FAIL resume on another thread count: no warning naming both counts:"; sed 's/^/    /' "$work/err"
  failures=$((failures + 1))
fi

# The model zoo through every command: summary, train, checkpoint, resume, evaluate, --init
# and evaluate from a DataParallel (module.-prefixed) file, compare, and the batch-1 BatchNorm error.
expect_ok "zoo: summary at 224" "$bin" summary --model shufflenetv2-0.5x-aconc --input 3x224x224 --classes 1000
if grep -q "MACs/image" "$work/out" && grep -q "^features.15 " "$work/out" && grep -q "^Multiply-accumulates per image: 40," "$work/out" \
  && grep -qE "^Memory budget \(batch 64, adam\): weights .* \+ gradients .* \+ optimizer state .* \+ activations .* = " "$work/out"; then
  echo "ok   zoo: summary shows the MACs column, the total and the memory budget"
else
  echo "FAIL zoo: summary table:"; sed 's/^/    /' "$work/out"; failures=$((failures + 1))
fi
expect_ok "zoo: summary --json" "$bin" summary --model shufflenetv2-0.5x-meta --input 3x224x224 --classes 1000 --json --batch-size 16
if ! python3 -c '
import json, math, sys
d = json.load(open(sys.argv[1]))
assert d["parameters"] == 1686620, d["parameters"]  # the official count
sd = d["state_dict"]
assert sd[0] == {"name": "first_conv.0.weight", "dtype": "F32", "shape": [24, 3, 3, 3]}, sd[0]
assert sd[-1] == {"name": "classifier.0.bias", "dtype": "F32", "shape": [1000]}, sd[-1]
total = sum(math.prod(e["shape"]) for e in sd if e["dtype"] == "F32" and
            not e["name"].endswith(("running_mean", "running_var")))
assert total == d["parameters"], (total, d["parameters"])
assert any(e["name"].endswith("num_batches_tracked") and e["dtype"] == "I64" and e["shape"] == [] for e in sd)
b = d["memory_budget_bytes"]
assert b["gradients"] == 4 * d["parameters"] and b["optimizer_state"] == 8 * d["parameters"], b
assert b["total"] == b["weights"] + b["gradients"] + b["optimizer_state"] + b["activations"] and b["activations"] > 0, b
assert sum(r["multiply_accumulates"] for r in d["rows"]) == d["multiply_accumulates"] > 0, d["multiply_accumulates"]
' "$work/out"; then
  echo "FAIL zoo: summary --json printed:"; head -c 600 "$work/out"; echo; failures=$((failures + 1))
fi
for m in shufflenetv2-0.5x-aconc tfnet-0.5; do
  expect_ok "zoo: train $m 3 steps" "$bin" train --data synthetic --model $m --batch-size 8 --max-steps 3 \
    --checkpoint "$work/$m.safetensors"
  expect_ok "zoo: resume $m to step 5" "$bin" train --data synthetic --model $m --batch-size 8 --max-steps 5 \
    --checkpoint "$work/$m.safetensors" --resume
  grep -q "resuming from .* at step 3" "$work/out" && grep -q "done: 5 steps" "$work/out" \
    || { echo "FAIL zoo: $m did not resume from step 3 to 5:"; sed 's/^/    /' "$work/out"; failures=$((failures + 1)); }
  expect_ok "zoo: evaluate $m" "$bin" evaluate --checkpoint "$work/$m.safetensors" --json
done
# A DataParallel state dict: every key carries "module." (the official checkpoints' form).
python3 -c '
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
meta = header.pop("__metadata__", None)
out = {"module." + k: v for k, v in header.items()}
if meta is not None:
    out["__metadata__"] = meta
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
' "$work/tfnet-0.5.safetensors" "$work/dp.safetensors"
expect_ok "zoo: evaluate a module.-prefixed file" "$bin" evaluate --checkpoint "$work/dp.safetensors" --json
expect_ok "zoo: --init from a module.-prefixed file" "$bin" train --data synthetic --model tfnet-0.5 --batch-size 8 \
  --max-steps 1 --init "$work/dp.safetensors"
expect_error "zoo: batch 1 with Meta-ACON's BatchNorm names the layer" \
  "first_conv\.2\.bn1.*Expected more than 1 value per channel when training.*--batch-size 2" -- \
  "$bin" train --data synthetic --model shufflenetv2-0.5x-meta --batch-size 1 --max-steps 1 --checkpoint "$work/b1.safetensors"
[[ ! -e $work/b1.safetensors ]] || { echo "FAIL batch-1 error left $work/b1.safetensors"; failures=$((failures + 1)); }
expect_error "zoo: a last batch of 1 is refused too" "last batch.*--drop-last" -- \
  "$bin" train --data synthetic --model seed-meta --batch-size 7 --max-steps 1
expect_ok "zoo: compare two models, 2 steps each" "$bin" compare --models shufflenetv2-0.5x-relu,tfnet-0.5 --seeds 1 --epochs 1 \
  --max-steps 2 --batch-size 8 --data synthetic --out "$work/zoocmp"
python3 -c '
import json, sys
rows = json.load(open(sys.argv[1] + "/results.json"))
assert [r["model"] for r in rows] == ["shufflenetv2-0.5x-relu", "tfnet-0.5"], rows
assert all(r["params"] > 100000 and len(r["accuracy_per_epoch"][0]) == 1 for r in rows), rows
' "$work/zoocmp" || { echo "FAIL zoo: compare results"; failures=$((failures + 1)); }

# Memory: `train` at batch 64 on a set of Fashion-MNIST's size (60,000 training images of 28×28,
# IDX files; 256 test images, so that the final evaluation is short) keeps its peak resident
# memory (the child's ru_maxrss, VmHWM) under 3× the budget `summary --json` prints: weights,
# gradients, optimizer state and one batch's activations. The peak comes with the first step
# (every buffer is allocated then).
mkdir -p "$work/fm60k"
python3 - "$work/fm60k" <<'PY'
import struct, sys
def write(name, header, body):
    with open(sys.argv[1] + "/" + name, "wb") as f:
        f.write(header + body)
for prefix, n in [("train", 60000), ("t10k", 256)]:
    write(prefix + "-images-idx3-ubyte", struct.pack(">IIII", 0x803, n, 28, 28), bytes(range(256)) * (n * 784 // 256))
    write(prefix + "-labels-idx1-ubyte", struct.pack(">II", 0x801, n), bytes(i % 10 for i in range(n)))
PY
for m in shufflenetv2-0.5x-aconc tfnet-0.5 resnet18-aconc; do
  budget=$("$bin" summary --model $m --input 1x28x28 --classes 10 --batch-size 64 --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["memory_budget_bytes"]["total"])')
  peak=$(python3 -c '
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
' "$bin" train --data fashion-mnist --data-dir "$work/fm60k" --model $m --batch-size 64 --max-steps 1) || peak=
  if [[ -z $peak ]]; then
    echo "FAIL zoo: memory: train $m failed"; failures=$((failures + 1))
  elif ((peak <= 3 * budget)); then
    echo "ok   zoo: memory: train $m peaks at $((peak >> 20)) MiB, $((peak * 100 / budget))% of the $((budget >> 20)) MiB budget (limit 300%)"
  else
    echo "FAIL zoo: memory: train $m peaks at $((peak >> 20)) MiB, $((peak * 100 / budget))% of the $((budget >> 20)) MiB budget (limit 300%)"
    failures=$((failures + 1))
  fi
done

if [[ $failures -gt 0 ]]; then
  echo "cli-checks: $failures failure(s)"
  exit 1
fi
echo "cli-checks: all checks passed"
