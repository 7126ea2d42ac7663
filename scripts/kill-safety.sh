#!/usr/bin/env bash
# kill-safety.sh: proves that acon-train's checkpoints survive SIGKILL at any moment and that
# `--resume` then finishes the run with exactly the weights of a run that was never interrupted.
#
# It trains twice without interruption (the reference; the second run checks that training is
# deterministic and, warm, times it), then, in each trial, starts the same training in a fresh
# directory, kills it with SIGKILL (kill -9) after a random delay spread over the reference run's
# duration, and checks that:
#   1. whatever is on disk loads: the model and best-model files evaluate (`acon-train evaluate`)
#      and the training-state file is loaded by the resume in step 2. A kill before the first
#      checkpoint leaves no checkpoint at all ("nothing to load"); a kill during a write may leave
#      only a hidden `.NAME.tmp.XXXXXX` file, which no loader reads and the next run removes.
#      Any other file, or one that does not load, fails the trial.
#   2. the same command with `--resume` runs to completion (from scratch when nothing was saved),
#      and leaves no temporary file behind;
#   3. its final model, training-state and best-model files equal the reference's byte for byte
#      (`cmp`: the files are deterministic, so equal bytes mean bit-identical weights, optimizer
#      moments, step and data position).
# About one trial in four also kills the resumed run once, checks again and resumes a second time.
#
# The delays come from bash's RANDOM seeded with KILL_SAFETY_SEED, so a run's sequence of kill
# moments (as fractions of the reference duration) is reproducible; each delay is printed.
#
# The trials run on seed-meta; then KILL_SAFETY_ZOO_TRIALS more (default 2) run the same checks
# on a zoo network, shufflenetv2-0.5x-aconc (BatchNorm, ACON-C, Graph units), in a short run.
#
# Usage, from a clean clone (builds acon-train in release if the binary is missing):
#   scripts/kill-safety.sh [TRIALS]
# Environment:
#   KILL_SAFETY_TRIALS        trials when no argument is given (default 20)
#   KILL_SAFETY_ZOO_TRIALS    trials of the zoo network (default 2; 0 skips it)
#   KILL_SAFETY_SEED          seed of the random delays (default 1)
#   KILL_SAFETY_SCRATCH_PATH  SwiftPM build directory holding release/acon-train (default .build)
#   ACON_TRAIN                use this acon-train binary instead (it is then never built)
#   KILL_SAFETY_KEEP=1        keep the work directory (it is always kept when a trial fails)
# Exit status: 0 when every trial resumed to bit-identical files, 1 otherwise, 2 on bad usage.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
trials=${1:-${KILL_SAFETY_TRIALS:-20}}
zoo_trials=${KILL_SAFETY_ZOO_TRIALS:-2}
seed=${KILL_SAFETY_SEED:-1}
if ! [[ $trials =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [TRIALS]  (TRIALS a positive integer, got '$trials')" >&2
  exit 2
fi
if ! [[ $zoo_trials =~ ^[0-9]+$ ]]; then
  echo "kill-safety: KILL_SAFETY_ZOO_TRIALS must be a non-negative integer, got '$zoo_trials'" >&2
  exit 2
fi
if ! [[ $seed =~ ^[0-9]+$ ]]; then
  echo "kill-safety: KILL_SAFETY_SEED must be a non-negative integer, got '$seed'" >&2
  exit 2
fi

if [[ -n ${ACON_TRAIN:-} ]]; then
  bin=$ACON_TRAIN
  [[ -x $bin ]] || { echo "kill-safety: ACON_TRAIN=$bin is not an executable" >&2; exit 2; }
else
  scratch=${KILL_SAFETY_SCRATCH_PATH:-.build}
  [[ $scratch = /* ]] || scratch=$repo/$scratch
  bin=$scratch/release/acon-train
  if [[ ! -x $bin ]]; then
    echo "kill-safety: $bin is missing; building it (swift build -c release --product acon-train)"
    (cd "$repo" && swift build -c release --product acon-train --scratch-path "$scratch")
  fi
fi

# One fixed run per suite: seed, threads, batch size and steps never change, so every run of it is
# the same computation. seed-meta: 60 steps of 32 images take about 3 s in release; a checkpoint
# every 4 steps. The zoo network: 12 steps of 8 images, a checkpoint every 3.
seed_train=(train --model seed-meta --data synthetic --seed 7 --threads 1 --batch-size 32 --max-steps 60
  --checkpoint-every 4)
zoo_train=(train --model shufflenetv2-0.5x-aconc --data synthetic --seed 7 --threads 1 --batch-size 8 --max-steps 12
  --checkpoint-every 3)
final_files=(model.safetensors model.state.safetensors model.best.safetensors)

work=$(mktemp -d "${TMPDIR:-/tmp}/kill-safety.XXXXXX")
running=()
failed=0
cleanup() {
  local pid
  for pid in "${running[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [[ ${KILL_SAFETY_KEEP:-0} = 1 || ${failed:-0} -gt 0 ]]; then
    echo "kill-safety: work directory kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# Sets `delay` to a random number of ms in [0, ref_ms) (two RANDOMs make 30 bits). Never call it
# in $(...): a subshell reseeds RANDOM, which would make the delays irreproducible.
random_delay() { delay=$((((RANDOM << 15 | RANDOM) * ref_ms) >> 30)); }

# Starts training into $1 (extra arguments follow), kills it after $2 ms, appends the outcome to
# $3. Sets `outcome` to "killed" or "finished" (the run ended before the kill).
run_and_kill() {
  local dir=$1 delay=$2 log=$3 pid status=0
  shift 3
  "$bin" "${train[@]}" --checkpoint "$dir/model.safetensors" "$@" >>"$log" 2>&1 &
  pid=$!
  running=("$pid")
  sleep "$(seconds "$delay")"
  kill -9 "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || status=$?  # (no "Killed" notice from bash)
  running=()
  case $status in
    137) outcome=killed ;;
    0) outcome=finished ;;
    *) outcome="failed with status $status (see $log)" ;;
  esac
}

# Checks what a kill left in $1: every model file evaluates, nothing unexpected is there. Sets
# `found` to a short description, or returns 1 with `problem` set.
check_after_kill() {
  local dir=$1 log=$2 f name temps=0 state=no
  found=""
  shopt -s nullglob dotglob
  local files=("$dir"/*)
  shopt -u nullglob dotglob
  for f in "${files[@]}"; do
    name=${f##*/}
    case $name in
      model.safetensors | model.best.safetensors)
        if ! "$bin" evaluate --checkpoint "$f" --data synthetic >>"$log" 2>&1; then
          problem="$name does not load (see $log)"
          return 1
        fi ;;
      model.state.safetensors) state=yes ;;  # loaded, strictly, by the resume that follows
      .model.safetensors.tmp.?????? | .model.state.safetensors.tmp.?????? | .model.best.safetensors.tmp.??????)
        temps=$((temps + 1)) ;;
      *)
        problem="unexpected file $name after the kill"
        return 1 ;;
    esac
  done
  if [[ -f $dir/model.safetensors ]]; then
    found="checkpoint loads"
  elif [[ $state = yes ]]; then
    found="state file only (killed between the state and model writes)"
  else
    found="nothing to load (killed before the first checkpoint)"
  fi
  [[ -f $dir/model.best.safetensors ]] && found+=", best loads"
  ((temps == 0)) || found+=", $temps interrupted-write temp file(s) ignored"
  return 0
}

# Resumes in $1 to completion; sets `resumed` to where it started from, or returns 1 with `problem`.
resume() {
  local dir=$1 log=$2
  if ! "$bin" "${train[@]}" --checkpoint "$dir/model.safetensors" --resume >"$log" 2>&1; then
    problem="--resume failed (see $log)"
    return 1
  fi
  if grep -q '^resuming from .* at step ' "$log"; then
    resumed="from step $(sed -n 's/^resuming from .* at step \([0-9]*\).*/\1/p' "$log" | head -n 1)"
  elif grep -q '^no checkpoint at ' "$log"; then
    resumed="from scratch"
  else
    resumed="(no resume message)"
  fi
  shopt -s nullglob dotglob
  local temps=("$dir"/.*.tmp.*)
  shopt -u nullglob dotglob
  if ((${#temps[@]} > 0)); then
    problem="the resumed run left temporary files: ${temps[*]##*/}"
    return 1
  fi
}

# run_suite NAME TRIALS: the reference runs of the command in `train`, then TRIALS kill trials,
# each in $work/NAME/.
run_suite() {
  local suite=$1 suite_trials=$2
  mkdir -p "$work/$suite"
  # The reference: an uninterrupted run, twice. The first one's files are the reference; the second
  # must match them (or no trial could), and its duration, warm, spreads the kills.
  for r in reference again; do
    mkdir -p "$work/$suite/$r"
    t0=$(now_ms)
    "$bin" "${train[@]}" --checkpoint "$work/$suite/$r/model.safetensors" >"$work/$suite/$r.log" 2>&1 || {
      echo "kill-safety: the reference run failed:" >&2
      cat "$work/$suite/$r.log" >&2
      exit 1
    }
    ref_ms=$(($(now_ms) - t0))
    for f in "${final_files[@]}"; do
      [[ -f $work/$suite/$r/$f ]] || { echo "kill-safety: the reference run wrote no $f" >&2; exit 1; }
      cmp -s "$work/$suite/reference/$f" "$work/$suite/$r/$f" || {
        echo "kill-safety: two uninterrupted runs wrote different $f: training is not deterministic" >&2
        exit 1
      }
    done
  done
  rm -rf "$work/$suite/again" "$work/$suite/again.log"
  echo "kill-safety: $suite: reference run: $(seconds "$ref_ms") s, deterministic (acon-train ${train[*]}); $suite_trials trials, delay seed $seed"
  RANDOM=$seed
  passed=0 killed_total=0
  start_all=$(now_ms)
  for ((t = 1; t <= suite_trials; t++)); do
    dir=$work/$suite/trial-$t/checkpoint
    logs=$work/$suite/trial-$t
    mkdir -p "$dir"
    problem=""
    line=""
    random_delay
    delay1=$delay
    second=$((RANDOM % 4 == 0))
    random_delay
    delay2=$delay

    run_and_kill "$dir" "$delay1" "$logs/run1.log"
    line="kill at $(seconds "$delay1") s ($((delay1 * 100 / ref_ms))%): $outcome"
    [[ $outcome = killed ]] && killed_total=$((killed_total + 1))
    if [[ $outcome != killed && $outcome != finished ]]; then
      problem="the run $outcome"
    elif check_after_kill "$dir" "$logs/check1.log"; then
      line+=", $found"
      if ((second)); then
        # Kill the resumed run too, then check again; the last resume below finishes it.
        run_and_kill "$dir" "$delay2" "$logs/run2.log" --resume
        line+="; resumed, kill at $(seconds "$delay2") s: $outcome"
        [[ $outcome = killed ]] && killed_total=$((killed_total + 1))
        if [[ $outcome != killed && $outcome != finished ]]; then
          problem="the resumed run $outcome"
        elif check_after_kill "$dir" "$logs/check2.log"; then
          line+=", $found"
        fi
      fi
      if [[ -z $problem ]] && resume "$dir" "$logs/resume.log"; then
        line+="; resumed $resumed to the end"
        for f in "${final_files[@]}"; do
          if [[ ! -f $dir/$f ]]; then
            problem="no $f at the end (the reference has one)"
            break
          elif ! cmp -s "$work/$suite/reference/$f" "$dir/$f"; then
            problem="$f differs from the reference's"
            break
          fi
        done
      fi
    fi

    if [[ -z $problem ]]; then
      passed=$((passed + 1))
      printf 'trial %2d/%d: ok: %s; bit-identical\n' "$t" "$suite_trials" "$line"
      rm -rf "$logs"
    else
      failed=$((failed + 1))
      printf 'trial %2d/%d: FAIL: %s; %s (kept in %s)\n' "$t" "$suite_trials" "$line" "$problem" "$logs"
    fi
  done

  echo "kill-safety: $suite: $passed/$suite_trials kills resumed to bit-identical weights ($killed_total SIGKILLs, $(seconds $(($(now_ms) - start_all))) s)"
}

train=("${seed_train[@]}")
run_suite seed-meta "$trials"
if ((zoo_trials > 0)); then
  train=("${zoo_train[@]}")
  run_suite shufflenetv2-0.5x-aconc "$zoo_trials"
fi
((failed == 0))
