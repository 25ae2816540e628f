#!/usr/bin/env bash
# Side-by-side benchmark: a 20-container stack (one network, one volume,
# init) brought up, re-applied unchanged, changed in one container's
# environment, and taken down — by moor, by Docker Engine + Compose (Debian's
# docker.io and docker-compose, dockerd started here with its own data root,
# exec root, pidfile and socket, no default bridge, no iptables) and by
# Podman + podman-compose (Debian's, with its own roots: bench/lib/podman.sh)
# in the same run, alternating run by run. Then the agent's directory
# source: manifest saved -> replacement container running.
#
#   sudo bench/stack.sh [RUNS] [SAVES]     (defaults 5 and 20)
#
# Environment: PEERS (default "docker podman"; "" runs moor alone, e.g.
# for a quick before/after of a moor change), NOOPS (no-op applies per
# round for every tool, default 5: the no-op is short, so it gets more
# samples), MOOR_NET_POOL (default 10.87.0.0/16). The load average is
# printed at the start and the end: a ratio counts only when every tool
# saw the same load, which alternating round by round gives.
#
# moor: `moor apply` (returns once every container runs) and `moor down
# --volumes`. Compose: `docker-compose up -d` and `docker-compose down -v`.
# podman-compose: `up -d` and `down -v`; its 1.0.3 does not notice a changed
# service (it labels every container with the same config hash), so its
# change is `up -d --force-recreate --no-deps c01`, what a user must type.
# Both images are imported from the same busybox tar; both stacks run
# `sleep` under an init (tini for moor, docker-init for Docker), so a stop
# ends at once on SIGTERM.
# Save -> running: with `moor agent` watching the manifest directory, the
# file is rewritten (temp file + rename, as editors and `sed -i` do) with a
# new environment for c01; the time runs until the replacement's shim has
# written its state (the container runs), seen by polling that file every
# millisecond.
#
# Needs root, docker.io, docker-compose, podman, podman-compose, netavark,
# aardvark-dns, catatonit, busybox-static, tini-static, nft, python3.
# Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
SAVES=${2:-20}
NOOPS=${NOOPS:-5}
PEERS=${PEERS-docker podman}
peer() { [[ " $PEERS " == *" $1 "* ]]; }
N=20
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
for pkg in docker.io docker-compose podman podman-compose netavark aardvark-dns catatonit \
  busybox-static tini nftables python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="${missing:-} $pkg"
done
if [ -n "${missing:-}" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

moor="$CARGO_TARGET_DIR/release/moor"
docker=/usr/bin/docker
work=$(mktemp -d /tmp/moor-bench-stack.XXXXXX)
dockerd_pid="" agent_pid=""
export MOOR_STATE_DIR="$work/moor" MOOR_NFT_TABLE=moor_bench_stack
export MOOR_NET_POOL=${MOOR_NET_POOL:-10.87.0.0/16}
export MOOR_CGROUP_PARENT=moor-bench-stack-$$
export DOCKER_HOST="unix://$work/docker.sock"
compose=(docker-compose -p bench -f "$work/c/docker-compose.yml")
. bench/lib/podman.sh
. bench/lib/docker.sh
cleanup() {
  set +e
  podman_cleanup
  if [ -n "$agent_pid" ]; then
    kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  fi
  [ -x "$moor" ] && "$moor" down -p bench --volumes >/dev/null 2>&1
  if [ -n "$dockerd_pid" ]; then
    "${compose[@]}" down -v >/dev/null 2>&1
    ids=$("$docker" ps -aq 2>/dev/null)
    [ -n "$ids" ] && "$docker" rm -f $ids >/dev/null 2>&1
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null
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

# The image, from busybox-static, for both engines.
root="$work/rootfs"
mkdir -p "$root"/{bin,etc,tmp,data}
chmod 1777 "$root/tmp"
cp "$(command -v busybox || echo /bin/busybox)" "$root/bin/busybox"
for a in sh sleep true cat; do ln -s busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
tar -C "$root" -cf "$work/rootfs.tar" .
"$moor" image import "$work/rootfs.tar" --tag localhost/bench/busybox:1 >/dev/null

# The same stack for both.
mkdir -p "$work/m" "$work/c"
{
  echo '[networks.bench]'
  echo '[volumes.data]'
  for i in $(seq -w 1 $N); do
    printf '[containers.c%s]\nimage = "localhost/bench/busybox:1"\ncommand = ["sleep", "1000000"]\nenv = { N = "%s" }\nnetworks = ["bench"]\nmounts = ["data:/data"]\ninit = true\n\n' "$i" "$i"
  done
} >"$work/m/stack.toml"
{
  echo 'version: "2.4"'
  echo 'services:'
  for i in $(seq -w 1 $N); do
    printf '  c%s:\n    image: localhost/bench/busybox:1\n    command: ["sleep", "1000000"]\n    environment: {N: "%s"}\n    networks: [bench]\n    volumes: ["data:/data"]\n    init: true\n' "$i" "$i"
  done
  echo 'networks: {bench: {}}'
  echo 'volumes: {data: {}}'
} >"$work/c/docker-compose.yml"

dver=- cver=- pver=- pcver=-
if peer docker; then
  dockerd_start "$DOCKER_HOST"
  "$docker" import "$work/rootfs.tar" localhost/bench/busybox:1 >/dev/null
  dver=$("$docker" version -f '{{.Server.Version}}')
  cver=$(docker-compose version --short)
fi
if peer podman; then
  podman_setup
  "$podman" import "$work/rootfs.tar" localhost/bench/busybox:1 >/dev/null
  pcompose=(podman-compose --podman-path "$podman" -p bench -f "$work/c/docker-compose.yml")
  pcver=$(podman-compose version 2>/dev/null | awk '/podman-compose(r)? version/ {print $NF; exit}')
fi

# Microseconds, from bash's own clock: a `date` process on each side of
# the command (as before 2026-12-06) put two process starts, about 2-3 ms
# here, into every sample of every tool.
timed() {
  local t0 t1
  t0=${EPOCHREALTIME/./}
  "$@" >"$work/last.log" 2>&1 || { echo "failed: $*" >&2; cat "$work/last.log" >&2; return 1; }
  t1=${EPOCHREALTIME/./}
  echo $((t1 - t0))
}
running_moor() { "$moor" ps --json | grep -c '"state": *"running"' || true; }
running_docker() { "$docker" ps -q | wc -l; }
running_podman() { "$podman" ps -q | wc -l; }
check() { # what, expected, got
  [ "$2" = "$3" ] || { echo "$1: expected $2 running containers, found $3" >&2; exit 1; }
}
# Replaces the value of c01's N (the first one in each file), like an editor.
set_env() {
  sed -i "0,/N = \"[^\"]*\"/s//N = \"$1\"/" "$work/m/stack.toml"
  sed -i "0,/N: \"[^\"]*\"/s//N: \"$1\"/" "$work/c/docker-compose.yml"
}

declare -A M D P
for op in cold noop change down; do M[$op]=""; D[$op]=""; P[$op]=""; done
for r in $(seq "$RUNS"); do
  M[cold]+=" $(timed "$moor" apply -p bench "$work/m")"
  check "moor cold up" $N "$(running_moor)"
  for _ in $(seq "$NOOPS"); do M[noop]+=" $(timed "$moor" apply -p bench "$work/m")"; done
  set_env "x$r"
  M[change]+=" $(timed "$moor" apply -p bench "$work/m")"
  check "moor change" $N "$(running_moor)"
  M[down]+=" $(timed "$moor" down -p bench --volumes)"
  check "moor down" 0 "$(running_moor)"
  set_env "01"
  if peer docker; then
    D[cold]+=" $(timed "${compose[@]}" up -d)"
    check "compose cold up" $N "$(running_docker)"
    for _ in $(seq "$NOOPS"); do D[noop]+=" $(timed "${compose[@]}" up -d)"; done
    set_env "x$r"
    D[change]+=" $(timed "${compose[@]}" up -d)"
    check "compose change" $N "$(running_docker)"
    D[down]+=" $(timed "${compose[@]}" down -v)"
    check "compose down" 0 "$(running_docker)"
    set_env "01"
  fi
  if peer podman; then
    P[cold]+=" $(timed "${pcompose[@]}" up -d)"
    check "podman-compose cold up" $N "$(running_podman)"
    for _ in $(seq "$NOOPS"); do P[noop]+=" $(timed "${pcompose[@]}" up -d)"; done
    set_env "x$r"
    P[change]+=" $(timed "${pcompose[@]}" up -d --force-recreate --no-deps c01)"
    check "podman-compose change" $N "$(running_podman)"
    P[down]+=" $(timed "${pcompose[@]}" down -v)"
    check "podman-compose down" 0 "$(running_podman)"
    set_env "01"
  fi
done

# Directory source: save -> replacement running.
"$moor" apply -p bench "$work/m" >/dev/null
"$moor" agent --source "$work/m" -p bench --metrics-addr 127.0.0.1:0 >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 300); do grep -q 'metrics on' "$work/agent.log" && break; sleep 0.1; done
sleep 3
python3 - "$work/m/stack.toml" "$MOOR_STATE_DIR/containers/c01" "$SAVES" >"$work/latency.txt" <<'EOF'
import json, os, re, sys, time
manifest, cdir, saves = sys.argv[1], sys.argv[2], int(sys.argv[3])
def running_pid():
    try:
        if os.path.exists(f"{cdir}/exit.json"):
            return None
        with open(f"{cdir}/state.json") as f:
            return json.load(f)["pid"]
    except (OSError, ValueError, KeyError):
        return None
for r in range(saves):
    old = None
    for _ in range(10000):
        old = running_pid()
        if old:
            break
        time.sleep(0.001)
    text = open(manifest).read()
    text = re.sub(r'N = "[^"]*"', f'N = "agent{r}"', text, count=1)
    tmp = f"{manifest}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    t0 = time.perf_counter()
    os.rename(tmp, manifest)
    while True:
        p = running_pid()
        if p and p != old:
            break
        if time.perf_counter() - t0 > 30:
            sys.exit("no replacement within 30 s")
        time.sleep(0.001)
    print(f"{(time.perf_counter() - t0) * 1000:.1f}", flush=True)
    time.sleep(1)
EOF
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $load_start at the start, $load_end at the end; $NOOPS no-op applies per round"
echo
python3 - "$N" "$RUNS" "$dver" "$cver" "$work/latency.txt" "${M[cold]}" "${M[noop]}" "${M[change]}" "${M[down]}" \
  "${D[cold]}" "${D[noop]}" "${D[change]}" "${D[down]}" \
  "$pver" "$pcver" "${P[cold]}" "${P[noop]}" "${P[change]}" "${P[down]}" <<'EOF'
import sys
n, runs, dver, cver, lat = sys.argv[1:6]
m = [list(map(int, x.split())) for x in sys.argv[6:10]]
d = [list(map(int, x.split())) for x in sys.argv[10:14]]
pver, pcver = sys.argv[14:16]
p = [list(map(int, x.split())) for x in sys.argv[16:20]]
def med(xs):
    xs = sorted(xs); k = len(xs)
    if not k:
        return None
    return xs[k // 2] if k % 2 else (xs[k // 2 - 1] + xs[k // 2]) / 2
def ms(us):
    if us is None:
        return "-"
    return f"{us / 1000:.0f} ms" if us >= 10000 else f"{us / 1000:.1f} ms"
def ratio(peer, mine):
    return "-" if peer is None else f"{peer / mine:.1f}×"
labels = ["cold up (cached image)", f"no-op up (nothing to change; {len(m[1])} runs)", "change one container's env", "down (with the volume)"]
targets = ["≥ 5×", "≥ 50×", "≥ 5×", "≥ 5×"]
print(f"| {n}-container stack, median of {runs} | moor | docker-compose {cver} (Engine {dver}) | ratio | podman-compose {pcver} (Podman {pver}) | ratio | target (vs Compose) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, a, b, c, t in zip(labels, m, d, p, targets):
    print(f"| {label} | {ms(med(a))} | {ms(med(b))} | {ratio(med(b), med(a))} | {ms(med(c))} | {ratio(med(c), med(a))} | {t} |")
print()
print("All runs (ms): " + "; ".join(
    f"{l.split(' (')[0]}: moor {' '.join(f'{x / 1000:.0f}' for x in a)}, compose {' '.join(f'{x / 1000:.0f}' for x in b)}, podman-compose {' '.join(f'{x / 1000:.0f}' for x in c)}"
    for l, a, b, c in zip(labels, m, d, p)))
ls = [float(x) for x in open(lat)]
s = sorted(ls)
print()
print(f"Directory source, manifest saved -> replacement running ({len(ls)} saves): "
      f"p50 {med(ls):.0f} ms, p90 {s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]:.0f} ms, "
      f"min {s[0]:.0f} ms, max {s[-1]:.0f} ms (target p50 ≤ 150 ms).")
EOF
