#!/usr/bin/env bash
# Side-by-side benchmark (issue 6, DESIGN.md §8): a 20-container stack (one
# network, one volume, init) brought up, re-applied unchanged, changed in one
# container's environment, and taken down — by moor and by Docker Engine +
# Compose (Debian's docker.io and docker-compose, dockerd started here with
# its own data root) in the same run. Then the agent's directory source:
# file saved -> replacement container running.
#
# Usage: sudo bench/stack.sh [RUNS]   Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
N=20
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
for pkg in docker.io docker-compose busybox-static nftables python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="${missing:-} $pkg"
done
if [ -n "${missing:-}" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

work=$(mktemp -d /tmp/moor-bench-stack.XXXXXX)
dockerd_pid="" agent_pid=""
export MOOR_STATE_DIR="$work/moor" MOOR_NFT_TABLE=moor_bench MOOR_NET_POOL=10.87.0.0/16
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  "$moor" down -p bench --volumes >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then
    "${compose[@]}" down -v >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null || true
  fi
  nft delete table ip moor_bench 2>/dev/null || true
  umount -R "$work/docker" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release -p moor
moor="$CARGO_TARGET_DIR/release/moor"

# The image, from busybox-static, for both engines.
root="$work/rootfs"
mkdir -p "$root"/{bin,etc,tmp,data}
cp "$(command -v busybox || echo /bin/busybox)" "$root/bin/busybox"
for a in sh sleep true cat; do ln -s busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
tar -C "$root" -cf "$work/rootfs.tar" .
"$moor" image import "$work/rootfs.tar" --tag localhost/bench/busybox:1 >/dev/null 2>&1

# The same stack for both.
mkdir -p "$work/m" "$work/c"
{
  echo '[networks.bench]'
  echo '[volumes.data]'
  for i in $(seq -w 1 $N); do
    printf '[containers.c%s]\nimage = "localhost/bench/busybox:1"\ncommand = ["sleep", "1000000"]\nenv = { N = "%s" }\nnetworks = ["bench"]\nmounts = ["data:/data"]\ninit = true\n\n' "$i" "$i"
  done
} > "$work/m/stack.toml"
{
  echo 'version: "2.4"'
  echo 'services:'
  for i in $(seq -w 1 $N); do
    printf '  c%s:\n    image: localhost/bench/busybox:1\n    command: ["sleep", "1000000"]\n    environment: {N: "%s"}\n    networks: [bench]\n    volumes: ["data:/data"]\n    init: true\n' "$i" "$i"
  done
  echo 'networks: {bench: {}}'
  echo 'volumes: {data: {}}'
} > "$work/c/docker-compose.yml"

dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
  --pidfile "$work/docker.pid" --iptables=false --ip6tables=false --bridge=none \
  --storage-driver=overlay2 >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="unix://$work/docker.sock"
until docker info >/dev/null 2>&1; do sleep 0.2; done
docker import "$work/rootfs.tar" localhost/bench/busybox:1 >/dev/null
compose=(docker-compose -p bench -f "$work/c/docker-compose.yml")

now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; python3 -c "print(f'{($(now)-$t0)*1000:.0f}')"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
set_env() { sed -i "0,/N = \"[^\"]*\"/s//N = \"$1\"/" "$work/m/stack.toml"; sed -i "0,/N: \"[^\"]*\"/s//N: \"$1\"/" "$work/c/docker-compose.yml"; }

declare -A M D
for op in cold noop change down; do M[$op]=""; D[$op]=""; done
for r in $(seq "$RUNS"); do
  M[cold]+=" $(timed "$moor" apply -p bench "$work/m")"
  M[noop]+=" $(timed "$moor" apply -p bench "$work/m")"
  set_env "x$r"
  M[change]+=" $(timed "$moor" apply -p bench "$work/m")"
  M[down]+=" $(timed "$moor" down -p bench --volumes)"
  set_env "01"
  D[cold]+=" $(timed "${compose[@]}" up -d)"
  D[noop]+=" $(timed "${compose[@]}" up -d)"
  set_env "x$r"
  D[change]+=" $(timed "${compose[@]}" up -d)"
  D[down]+=" $(timed "${compose[@]}" down -v)"
  set_env "01"
done

# Directory source: save -> replacement running (moor ps shows a new PID for c01).
"$moor" apply -p bench "$work/m" >/dev/null
"$moor" agent --source "$work/m" -p bench --metrics-addr 127.0.0.1:0 >"$work/agent.log" 2>&1 &
agent_pid=$!
sleep 2
pid_of() { "$moor" ps --json | python3 -c 'import json,sys; print(next((c["pid"] for c in json.load(sys.stdin) if c["name"]=="c01" and c["state"]=="running"), ""))'; }
latencies=()
for r in $(seq 10); do
  old=$(pid_of)
  t0=$(now)
  set_env "agent$r"
  while :; do p=$(pid_of); [ -n "$p" ] && [ "$p" != "$old" ] && break; sleep 0.005; done
  latencies+=("$(python3 -c "print(f'{($(now)-$t0)*1000:.0f}')")")
  sleep 0.5
done
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""

echo
echo "| $N-container stack (median of $RUNS) | moor | docker-compose | ratio |"
echo "| --- | ---: | ---: | ---: |"
for op in cold noop change down; do
  m=$(median ${M[$op]}); d=$(median ${D[$op]})
  label=$(case $op in cold) echo "cold up (cached image)";; noop) echo "no-op up";; change) echo "change one container's env";; down) echo "down";; esac)
  echo "| $label | ${m} ms | ${d} ms | $(python3 -c "print(f'{$d/max($m,1):.1f}x')") |"
done
echo
echo "agent directory source, file saved -> replacement running (10 runs): p50 $(median "${latencies[@]}") ms (includes ~10-20 ms of polling with moor ps); all: ${latencies[*]}"
