#!/usr/bin/env bash
# What the detached DNS resolver costs a cold up: a 20-container stack on
# one network (bench/stack.sh's) brought up by `moor apply` in a fresh state
# dir, then the CPU the state dir's resolver (`moor dns`, started by that
# apply and still running) has used so far, from /proc/PID/schedstat,
# against the apply's wall time. All of the resolver's CPU counted as if it
# were on the apply's critical path gives an upper bound on what it adds.
#
#   sudo bench/resolver-cost.sh [RUNS]     (default 3)
#
# Needs root, busybox-static. Uses its own bridge prefix, nftables table,
# address pool and cgroup parent. Prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
nice -n 5 cargo build -q --release -p moor
moor="$CARGO_TARGET_DIR/release/moor"
work=$(mktemp -d /tmp/moor-rescost.XXXXXX)
export MOOR_BRIDGE_PREFIX=rc- MOOR_NFT_TABLE=moor_rescost MOOR_NET_POOL=10.231.0.0/16 MOOR_CGROUP_PARENT=moor-rescost
cleanup() {
  set +e
  for s in "$work"/state*; do
    [ -d "$s" ] && "$moor" --state-dir "$s" down -p bench --volumes >/dev/null 2>&1
  done
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/root
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
cp "$(command -v busybox)" "$root/bin/busybox"
for a in sh sleep true cat; do ln -s busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
tar -C "$root" -cf "$work/rootfs.tar" .
mkdir -p "$work/m"
{
  echo '[networks.bench]'
  echo '[volumes.data]'
  for i in $(seq -w 1 20); do
    printf '[containers.c%s]\nimage = "localhost/bench/busybox:1"\ncommand = ["sleep", "1000000"]\nenv = { N = "%s" }\nnetworks = ["bench"]\nmounts = ["data:/data"]\ninit = true\n\n' "$i" "$i"
  done
} >"$work/m/stack.toml"
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$RUNS"); do
  s=$work/state$r
  "$moor" --state-dir "$s" image import "$work/rootfs.tar" --tag localhost/bench/busybox:1 >/dev/null 2>&1
  t0=$(date +%s%N)
  "$moor" --state-dir "$s" apply -p bench "$work/m" >/dev/null
  t1=$(date +%s%N)
  pid=""
  for p in $(pgrep -x moor); do
    if { tr '\0' ' ' </proc/"$p"/cmdline; } 2>/dev/null | grep -q -- "--state-dir $s dns"; then pid=$p; fi
  done
  [ -n "$pid" ] || { echo "no resolver for $s" >&2; exit 1; }
  cpu=$(awk '{printf "%.2f", $1 / 1e6}' /proc/"$pid"/schedstat)
  up=$(( (t1 - t0) / 1000000 ))
  python3 -c "import sys; c,u=float(sys.argv[1]),int(sys.argv[2]); print(f'run {sys.argv[3]}: cold up {u} ms; resolver CPU {c:.2f} ms = {100*c/u:.2f} % of it')" "$cpu" "$up" "$r"
  "$moor" --state-dir "$s" down -p bench --volumes >/dev/null 2>&1 || true
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
