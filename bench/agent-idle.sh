#!/usr/bin/env bash
# Benchmark: the agent at rest with 100 containers.
#
#   sudo bench/agent-idle.sh [N] [SECONDS] [SCRAPES]     (defaults 100, 180, 200)
#
# Brings up N busybox containers (`sleep`, one network, no health checks)
# with `moor apply`, starts `moor agent` on the same manifest directory, waits
# until it is ready and 20 s more, then for SECONDS scrapes /metrics every
# 15 s (as Prometheus would) and measures:
# - the agent's CPU: utime + stime from /proc/PID/stat over the window, as a
#   share of one core;
# - its memory at the end: VmRSS, VmHWM (peak) and Pss (smaps_rollup);
# - its threads;
# - the shims' memory: VmRSS and Pss of each of the N shims (Pss shares the
#   pages of the `moor-shim` binary among all the processes that map them).
# Then SCRAPES back-to-back scrapes of /metrics timed by curl on loopback
# (time_total: connect + request + response; the server-side time is below
# that) and the size of the response.
#
# Needs root, busybox-static, tini-static, curl, python3. Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
SECONDS_IDLE=${2:-180}
SCRAPES=${3:-200}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export MOOR_NFT_TABLE=moor_bench_idle MOOR_NET_POOL=10.86.0.0/16 MOOR_CGROUP_PARENT=moor-bench-idle-$$

work=$(mktemp -d /tmp/moor-bench-idle.XXXXXX)
export MOOR_STATE_DIR=$work/state
agent_pid=""
cleanup() {
  set +e
  if [ -n "$agent_pid" ]; then
    kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  fi
  if [ -x "${moor:-}" ]; then
    "$moor" down -p idle --volumes >/dev/null 2>&1
  fi
  nft delete table ip "$MOOR_NFT_TABLE" 2>/dev/null
  for d in /sys/fs/cgroup/"$MOOR_CGROUP_PARENT" /sys/fs/cgroup/*/"$MOOR_CGROUP_PARENT"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nice -n 5 cargo build -q --release -p moor
moor="$CARGO_TARGET_DIR/release/moor"
bash examples/busybox-image.sh "$moor" >/dev/null

m=$work/idle
mkdir -p "$m"
{
  printf '[images.busybox]\nref = "localhost/moor-example/busybox:1"\npull = "never"\n\n'
  printf '[networks.idle]\nsubnet = "10.86.1.0/24"\n\n'
  for i in $(seq "$N"); do
    printf '[containers.c%03d]\nimage = "busybox"\nnetworks = ["idle"]\ncommand = ["sleep", "1000000"]\nstop_grace_period = "0s"\n\n' "$i"
  done
} >"$m/stack.toml"
"$moor" apply -p idle "$m" >"$work/apply.log" 2>&1
running=$("$moor" ps --json | grep -o '"state": *"running"' | wc -l)

"$moor" agent --source "$m" -p idle --metrics-addr 127.0.0.1:0 >"$work/agent.log" 2>&1 &
agent_pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'http://[0-9.:]*/metrics' "$work/agent.log" | head -1 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/agent.log" >&2; exit 1; }
base=${addr%/metrics}
for _ in $(seq 600); do
  curl -sf "$base/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "$base/readyz" >/dev/null || { echo "the agent never became ready" >&2; exit 1; }
sleep 20

ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(date +%s.%N)
c0=$(ticks)
end=$(($(date +%s) + SECONDS_IDLE))
scrapes=0
while [ "$(date +%s)" -lt "$end" ]; do
  curl -sf "$addr" >/dev/null && scrapes=$((scrapes + 1))
  left=$((end - $(date +%s)))
  [ "$left" -le 0 ] && break
  sleep $((left < 15 ? left : 15))
done
c1=$(ticks)
t1=$(date +%s.%N)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$agent_pid/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$agent_pid/status")
pss=$(awk '/^Pss:/ {print $2}' "/proc/$agent_pid/smaps_rollup")
threads=$(awk '/^Threads/ {print $2}' "/proc/$agent_pid/status")

# The shims: every process running `moor-shim` (installed beside `moor`).
shim_mem=$(for p in $(pgrep -f "^$moor-shim $MOOR_STATE_DIR/"); do
  echo "$(awk '/^VmRSS/ {print $2}' "/proc/$p/status") $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")"
done)

# Scrape time, back to back: curl's time_total (a new connection each
# time), and on one kept-alive connection from request sent to last byte
# received (the server's time plus loopback).
for _ in $(seq "$SCRAPES"); do
  curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "$addr"
done >"$work/scrapes.txt"
python3 - "${base#http://}" "$SCRAPES" >"$work/keepalive.txt" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
f = s.makefile("rb")
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    length = None
    while True:
        line = f.readline()
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        if line in (b"\r\n", b""):
            break
    if length is None:
        sys.exit("no content-length")
    f.read(length)
    print(f"{time.perf_counter() - t0:.6f}")
PY
samples=$(curl -s "$addr" | grep -vc '^#')

python3 - "$N" "$running" "$c0" "$c1" "$t0" "$t1" "$hz" "$scrapes" "$rss" "$hwm" "$pss" "$threads" \
  "$work/scrapes.txt" "$samples" "$work/keepalive.txt" <<EOF
import sys, statistics
n, running, c0, c1, t0, t1, hz, scrapes, rss, hwm, pss, threads, sfile, samples, kfile = sys.argv[1:]
kt = sorted(float(l) * 1000 for l in open(kfile))
cpu = (int(c1) - int(c0)) / int(hz)
wall = float(t1) - float(t0)
st = sorted(float(l.split()[0]) * 1000 for l in open(sfile))
size = int(open(sfile).readline().split()[1])
q = lambda xs, p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
shims = [tuple(map(int, l.split())) for l in """$shim_mem""".split("\n") if l.strip()]
print(f"| agent idle, {running} / {n} containers running | figure | target |")
print("| --- | ---: | ---: |")
print(f"| CPU over {wall:.0f} s with a scrape every 15 s ({scrapes} scrapes) | {cpu:.2f} s = {100 * cpu / wall:.2f} % of one core | < 1 % |")
print(f"| memory at the end: VmRSS (peak VmHWM) | {int(rss) / 1024:.1f} MiB ({int(hwm) / 1024:.1f} MiB) | ≤ 30 MB |")
print(f"| memory at the end: Pss | {int(pss) / 1024:.1f} MiB | |")
print(f"| threads | {threads} | |")
print(f"| /metrics scrape on a kept-alive connection, request to last byte, median (p90, max) of {len(kt)} | {q(kt, .5):.2f} ms ({q(kt, .9):.2f}, {kt[-1]:.2f}) | ≤ 5 ms |")
print(f"| /metrics scrape, curl time_total (new connection), median (p90, max) of {len(st)} | {q(st, .5):.2f} ms ({q(st, .9):.2f}, {st[-1]:.2f}) | |")
print(f"| /metrics response | {size / 1024:.0f} KiB, {samples} samples | |")
if shims:
    r = sorted(s[0] for s in shims); p = sorted(s[1] for s in shims)
    print(f"| shims ({len(shims)}): VmRSS median (max) | {q(r, .5) / 1024:.2f} MiB ({r[-1] / 1024:.2f}) | ≤ 1.5 MB |")
    print(f"| shims ({len(shims)}): Pss median, sum | {q(p, .5) / 1024:.2f} MiB, {sum(p) / 1024:.1f} MiB | |")
EOF
