#!/usr/bin/env bash
# Data-parallel scaling on this machine: training images/s of seed-aconc on the synthetic set at
# 1 process and at 2 MPI ranks, one thread each (--threads 1), the same global batch of 64, and
# the time the gradient all-reduce takes per step. Needs Open MPI; builds acon-train with the MPI
# trait into .build-mpi. Usage: scripts/mpi-scaling.sh [STEPS] (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-100}"
swift build -c release --traits MPI --scratch-path .build-mpi --product acon-train >/dev/null
bin=.build-mpi/release/acon-train
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(train --model seed-aconc --data synthetic --max-steps "$steps" --batch-size 64 --seed 1 --threads 1)
echo "== 1 process, 1 thread"
"$bin" "${args[@]}" | grep -E "^epoch|^done"
echo "== 2 ranks (mpirun -np 2), 1 thread each"
mpirun -np 2 --oversubscribe --bind-to none "$bin" "${args[@]}" --distributed | grep -E "^epoch|^done|^data-parallel"
