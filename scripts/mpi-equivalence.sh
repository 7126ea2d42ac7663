#!/usr/bin/env bash
# Data-parallel equivalence under MPI: trains each seed network for 20 steps at a global batch of
# 64, in file order (--no-shuffle), once as one process and once as two ranks
# (`mpirun -np 2 ... --distributed`, each rank reading half of every batch), and checks that the
# final weights agree to 1e-5 relative (torch.allclose's rule, rtol 1e-5 and atol 1e-8:
# scripts/compare_weights.py). seed-meta's BatchNorms inside the β network run with
# --sync-batchnorm, so two ranks see the global batch's statistics.
# The optimizer is SGD (momentum 0.9, lr 0.05): the two runs differ only by float rounding (the
# batch is summed in another order), and SGD keeps such differences at rounding size. Adam does
# not: its per-element step lr·m/√v has the same size whatever the gradient's, so where a gradient
# is rounding noise around zero the two runs step by ±lr in different directions.
# Then a fault: rank 1 is killed mid-run; the job must stop within 60 s with an error, and the
# last checkpoint must still load.
#
# Needs Open MPI (apt: libopenmpi-dev openmpi-bin); builds acon-train with the MPI trait into
# .build-mpi. Usage: scripts/mpi-equivalence.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building acon-train with MPI (swift build --traits MPI)"
swift build -c release --traits MPI --scratch-path .build-mpi --product acon-train
bin=.build-mpi/release/acon-train
# Open MPI refuses to run as root unless told it is fine (CI containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun -np 2 --oversubscribe --bind-to none)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(train --data synthetic --max-steps 20 --batch-size 64 --no-shuffle --seed 3 --threads 1
  --optimizer sgd --lr 0.05)
status=0
for model in seed-relu seed-aconc seed-meta; do
  extra=()
  [ "$model" = seed-meta ] && extra=(--sync-batchnorm)
  "$bin" "${common[@]}" --model "$model" --checkpoint "$work/one-$model.safetensors" >"$work/one-$model.log" 2>&1 \
    || { cat "$work/one-$model.log"; exit 1; }
  "${mpirun[@]}" "$bin" "${common[@]}" --model "$model" --distributed "${extra[@]}" \
    --checkpoint "$work/two-$model.safetensors" >"$work/two-$model.log" 2>&1 \
    || { cat "$work/two-$model.log"; exit 1; }
  printf "%-11s 1 process vs 2 ranks: " "$model"
  python3 scripts/compare_weights.py "$work/one-$model.safetensors" "$work/two-$model.safetensors" 1e-5 1e-8 || status=1
done

echo "== resume: 2 ranks, 10 steps, then --resume to 20, against 20 steps in one go"
"${mpirun[@]}" "$bin" "${common[@]}" --model seed-aconc --distributed --max-steps 10 \
  --checkpoint "$work/resumed.safetensors" >"$work/resume1.log" 2>&1 || { cat "$work/resume1.log"; exit 1; }
"${mpirun[@]}" "$bin" "${common[@]}" --model seed-aconc --distributed --max-steps 20 --resume \
  --checkpoint "$work/resumed.safetensors" >"$work/resume2.log" 2>&1 || { cat "$work/resume2.log"; exit 1; }
if cmp -s "$work/resumed.safetensors" "$work/two-seed-aconc.safetensors"; then
  echo "resume: bit-identical to the uninterrupted 2-rank run"
else
  echo "resume: the resumed 2-rank run differs from the uninterrupted one"; status=1
fi

echo "== fault: kill rank 1 of a 2-rank run"
fault=(train --data synthetic --max-steps 100000 --epochs 1000 --batch-size 64 --seed 3 --threads 1
  --model seed-aconc --distributed --checkpoint "$work/fault.safetensors" --checkpoint-every 5)
"${mpirun[@]}" "$bin" "${fault[@]}" >"$work/fault.log" 2>&1 &
job=$!
for _ in $(seq 1 100); do [ -f "$work/fault.safetensors" ] && break; sleep 0.3; done
[ -f "$work/fault.safetensors" ] || { echo "no checkpoint appeared"; cat "$work/fault.log"; exit 1; }
victim=$(pgrep -f -- "--checkpoint $work/fault.safetensors" | while read -r p; do
  [ "$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -c '^OMPI_COMM_WORLD_RANK=1$')" = 1 ] && echo "$p"; done | head -n 1)
[ -n "$victim" ] || { echo "rank 1 not found"; exit 1; }
start=$(date +%s)
kill -9 "$victim"
stopped=""
for _ in $(seq 1 600); do
  if ! kill -0 "$job" 2>/dev/null; then stopped=yes; break; fi
  sleep 0.1
done
if [ -z "$stopped" ]; then
  echo "fault: the job still runs 60 s after rank 1 died"; kill -9 "$job" 2>/dev/null || true; status=1
else
  wait "$job" && { echo "fault: mpirun exited 0 after a rank died"; status=1; } || true
  echo "fault: the job stopped $(($(date +%s) - start)) s after rank 1 was killed; mpirun said:"
  grep -iE "rank|signal|abort|exited" "$work/fault.log" | head -n 3 | sed 's/^/  /'
  "$bin" evaluate --checkpoint "$work/fault.safetensors" --data synthetic --json >/dev/null \
    && echo "fault: the last checkpoint loads" || { echo "fault: the last checkpoint does not load"; status=1; }
fi
exit "$status"
