#!/usr/bin/env bash
# Data-parallel training across a real, rate-limited link: two ranks in two network namespaces
# joined by a veth pair that tc's tbf limits to 1 Gbit/s, Open MPI over TCP on that pair (mpirun
# enters the second namespace through --mca plm_rsh_agent and `ip netns exec`). Prints the
# link's measured rate, then the training step time of one process and of 2 ranks with the
# gradient all-reduce after backward (--bucket-cap-mb 0) and overlapped with it (DDP-style
# buckets, the default), once more with Open MPI's TCP progress thread (btl_tcp_progress_thread,
# which moves the transfers on while the rank computes, at the cost of some of its CPU), and how
# much of the all-reduce was not hidden.
# Needs root (ip netns, tc), iproute2, python3 and Open MPI; builds acon-train with the MPI trait
# into .build-mpi. Every rank and the single process run one thread (--threads 1): the machine's
# two cores are the two "machines".
# Usage: scripts/mpi-veth.sh [STEPS] [MODEL] [RATE] [BUCKET_MB] (default 12, resnet18-relu, 1gbit, 25).
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-12}"
model="${2:-resnet18-relu}"
rate="${3:-1gbit}"
bucket="${4:-25}"
if [ "$(id -u)" != 0 ]; then
  echo "mpi-veth.sh: needs root for network namespaces and tc (run it as root, or with sudo)" >&2
  exit 1
fi
for tool in ip tc mpirun python3; do
  command -v "$tool" >/dev/null || { echo "mpi-veth.sh: $tool is missing (apt-get install iproute2 openmpi-bin python3)" >&2; exit 1; }
done
swift build -c release --traits MPI --scratch-path .build-mpi --product acon-train >/dev/null
bin="$PWD/.build-mpi/release/acon-train"

ns=(acon-veth0 acon-veth1)
addr=(10.77.0.1 10.77.0.2)
delete_namespaces() {
  ip netns del "${ns[0]}" 2>/dev/null || true
  ip netns del "${ns[1]}" 2>/dev/null || true
}
delete_namespaces  # left over from a killed run
tmp="$(mktemp -d)"
trap 'delete_namespaces; rm -rf "$tmp"' EXIT

# Two namespaces, one veth pair, each end limited to $rate by a token bucket.
ip netns add "${ns[0]}"
ip netns add "${ns[1]}"
ip link add acon-v0 type veth peer name acon-v1
for i in 0 1; do
  ip link set "acon-v$i" netns "${ns[$i]}"
  ip -n "${ns[$i]}" addr add "${addr[$i]}/24" dev "acon-v$i"
  ip -n "${ns[$i]}" link set lo up
  ip -n "${ns[$i]}" link set "acon-v$i" up
  ip netns exec "${ns[$i]}" tc qdisc add dev "acon-v$i" root tbf rate "$rate" burst 512kb latency 20ms
done

# The link's rate, measured: 200 MB from namespace 1 to namespace 0 over TCP.
cat >"$tmp/rate.py" <<'EOF'
import socket, sys, time
if sys.argv[1] == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], 5599)); s.listen(1); c, _ = s.accept(); n = 0; t0 = None
    while True:
        b = c.recv(1 << 20)
        if not b: break
        if t0 is None: t0 = time.time()
        n += len(b)
    print("link: %.0f MB/s (%.2f Gbit/s) measured over %d MB" % (n / (time.time() - t0) / 1e6, n * 8 / (time.time() - t0) / 1e9, n // 1000000))
else:
    time.sleep(0.5); s = socket.create_connection((sys.argv[2], 5599)); buf = b"\0" * (1 << 20)
    for _ in range(200): s.sendall(buf)
    s.close()
EOF
ip netns exec "${ns[0]}" python3 "$tmp/rate.py" recv "${addr[0]}" &
ip netns exec "${ns[1]}" python3 "$tmp/rate.py" send "${addr[0]}"
wait

# mpirun runs in namespace 0 (the first host is local to it) and starts the second rank's
# daemon through this agent, in place of ssh.
cat >"$tmp/agent.sh" <<EOF
#!/bin/sh
host="\$1"; shift
case "\$host" in
  ${addr[0]}) exec ip netns exec ${ns[0]} sh -c "\$*" ;;
  ${addr[1]}) exec ip netns exec ${ns[1]} sh -c "\$*" ;;
  *) echo "mpi-veth agent: unknown host \$host" >&2; exit 1 ;;
esac
EOF
chmod +x "$tmp/agent.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(train --model "$model" --data synthetic --max-steps "$steps" --batch-size 64 --seed 1 --threads 1
  --optimizer sgd --lr 0.01)
mpi=(mpirun -np 2 --host "${addr[0]},${addr[1]}" --mca plm_rsh_agent "$tmp/agent.sh"
  --mca btl self,tcp --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 --bind-to none)

echo "== $model, global batch 64, $steps steps, 1 process, 1 thread"
"$bin" "${args[@]}" | grep -E "^epoch|^done"
echo "== 2 ranks over the $rate veth link, all-reduce after backward (--bucket-cap-mb 0)"
ip netns exec "${ns[0]}" "${mpi[@]}" "$bin" "${args[@]}" --distributed --bucket-cap-mb 0 | grep -E "^epoch|^done|^data-parallel"
echo "== 2 ranks over the $rate veth link, all-reduce overlapped with backward (buckets of $bucket MiB)"
ip netns exec "${ns[0]}" "${mpi[@]}" "$bin" "${args[@]}" --distributed --bucket-cap-mb "$bucket" | grep -E "^epoch|^done|^data-parallel"
echo "== the same, with Open MPI's TCP progress thread (--mca btl_tcp_progress_thread 1)"
ip netns exec "${ns[0]}" "${mpi[@]}" --mca btl_tcp_progress_thread 1 "$bin" "${args[@]}" --distributed --bucket-cap-mb "$bucket" \
  | grep -E "^epoch|^done|^data-parallel"
