#!/usr/bin/env bash
# Benchmark (issue 7, Performance): git push → replacement container running,
# with the push webhook; and the agent's CPU while idle with 3 git sources
# polling every 10 s.
#
#   sudo bench/git-webhook.sh [ROUNDS] [IDLE_SECONDS]     (defaults 20 and 120)
#
# The remote is a real `git daemon` on loopback serving bare repositories;
# the agent (release build) fetches over git:// (shallow).
#
# Push → running: each round commits a new GREETING for a busybox container
# and pushes it, then sends GitHub's push webhook (X-Hub-Signature-256) and
# polls `moor ps --json` every 10 ms until a container of a new id runs in the
# old one's place (the old one stopped and removed, the new one created and
# started). The poll interval is one hour, so only the webhook explains a
# sync. Reported: webhook → applied, and push
# + webhook → applied (p50, p90, min, max).
#
# Idle CPU: the agent alone with 3 git sources (one container each) polling
# every 10 s, nothing changing; its utime+stime from /proc over IDLE_SECONDS
# after the sources converged and a 15 s settling time.
#
# Needs root, git (git daemon), busybox-static, curl, jq, openssl, bc.
# Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-20}
IDLE=${2:-120}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export MOOR_NFT_TABLE=moor_bench_git MOOR_NET_POOL=10.87.0.0/16
export MOOR_CGROUP_PARENT=moor-bench-git-$$ MOOR_BRIDGE_PREFIX=mbgit-

work=$(mktemp -d /tmp/moor-bench-git.XXXXXX)
export MOOR_STATE_DIR=$work/state
daemon_pid="" agent_pid=""
projects=(hook idle-a idle-b idle-c)

stop_agent() {
  if [ -n "$agent_pid" ]; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
    agent_pid=""
  fi
}
cleanup() {
  set +e
  stop_agent
  if [ -x "${moor:-}" ]; then
    for p in "${projects[@]}"; do "$moor" down -p "$p" --volumes >/dev/null 2>&1; done
  fi
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  nft delete table ip "$MOOR_NFT_TABLE" 2>/dev/null
  for d in /sys/fs/cgroup/"$MOOR_CGROUP_PARENT" /sys/fs/cgroup/*/"$MOOR_CGROUP_PARENT"; do
    rmdir "$d" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${MOOR_BIN:-}" ]; then # e.g. a debug build, to try the script out
  moor=$MOOR_BIN
else
  cargo build -q --release -p moor
  moor="$CARGO_TARGET_DIR/release/moor"
fi
bash examples/busybox-image.sh "$moor" >/dev/null 2>"$work/import.log"

now() { date +%s%N; }
stats() { # values in ns on stdin → "p50 | p90 | min | max" in ms
  sort -n | awk '{a[NR]=$1/1e6} END {
    p50 = (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2);
    i = int(0.9*NR + 0.999); if (i < 1) i = 1;
    printf "%.0f ms | %.0f ms | %.0f ms | %.0f ms", p50, a[i], a[1], a[NR] }'
}
git_() { git -c user.name=bench -c user.email=bench@moor.invalid -c commit.gpgsign=false "$@"; }

manifest() { # NAME GREETING
  cat <<EOF
[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[containers.$1]
image        = "busybox"
command      = ["sleep", "3600"]
env          = { GREETING = "$2" }
network_mode = "none"
init         = true
EOF
}

# One bare repository per project, served by git daemon; a work clone each.
srv=$work/srv
mkdir -p "$srv"
for p in "${projects[@]}"; do
  git_ init -q --bare -b main "$srv/$p.git"
  git_ init -q -b main "$work/$p"
  git_ -C "$work/$p" remote add origin "$srv/$p.git"
  manifest "c-$p" "v0" >"$work/$p/stack.toml"
  git_ -C "$work/$p" add -A
  git_ -C "$work/$p" commit -q -m v0
  git_ -C "$work/$p" push -q origin main
done
free_port() { # a loopback port nothing listens on
  local p
  while :; do
    p=$(shuf -i 20000-60000 -n 1)
    (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null || { echo "$p"; return; }
  done
}
daemon_port=$(free_port)
"$(git --exec-path)/git-daemon" --export-all --reuseaddr --base-path="$srv" \
  --listen=127.0.0.1 --port="$daemon_port" 2>"$work/daemon.log" &
daemon_pid=$!
until (exec 3<>/dev/tcp/127.0.0.1/"$daemon_port") 2>/dev/null; do sleep 0.05; done

http_port=$(free_port)
status() { curl -fsS "http://127.0.0.1:$http_port/status" 2>/dev/null || true; }
# "ID STATE" of container $1.
container() {
  "$moor" ps --all --json 2>/dev/null |
    jq -r --arg n "$1" '.[] | select(.name == $n) | "\(.id) \(.state)"' 2>/dev/null || true
}
# The applied revision of source $1 when its last pass succeeded.
applied() {
  status | jq -r --arg p "$1" \
    '.sources[]? | select(.project == $p and .last_error == null) | .applied_revision // ""' \
    2>/dev/null || true
}

# --- push → running, with the webhook ------------------------------------
secret="bench-webhook-secret"
printf '%s\n' "$secret" >"$work/hook.secret"
"$moor" agent --source "git+git://127.0.0.1:$daemon_port/hook.git" -p hook --interval 1h --insecure \
  --webhook-secret-file "$work/hook.secret" --metrics-addr "127.0.0.1:$http_port" \
  2>"$work/agent-hook.log" &
agent_pid=$!
first=$(git_ -C "$work/hook" rev-parse HEAD)
until [ "$(applied hook)" = "$first" ]; do sleep 0.1; done

body='{"ref":"refs/heads/main"}'
sig="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)"
: >"$work/hook.ns"
: >"$work/push-hook.ns"
for i in $(seq 1 "$ROUNDS"); do
  manifest c-hook "v$i" >"$work/hook/stack.toml"
  git_ -C "$work/hook" commit -q -am "v$i"
  old_id=$(container c-hook | cut -d' ' -f1)
  t_push=$(now)
  git_ -C "$work/hook" push -q origin main
  t0=$(now)
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
    -H "X-Hub-Signature-256: $sig" -H 'Content-Type: application/json' \
    --data "$body" "http://127.0.0.1:$http_port/hooks/git/hook")
  [ "$code" = 202 ] || { echo "webhook answered $code" >&2; exit 1; }
  # Done when a container of another id runs in c-hook's place.
  while :; do
    read -r id state <<<"$(container c-hook)"
    [ -n "${id:-}" ] && [ "$id" != "$old_id" ] && [ "${state:-}" = running ] && break
    sleep 0.01
  done
  t1=$(now)
  echo $((t1 - t0)) >>"$work/hook.ns"
  echo $((t1 - t_push)) >>"$work/push-hook.ns"
done
# The replacement really runs the new spec.
got=$("$moor" exec c-hook -- sh -c 'echo $GREETING' || true)
if [ "$got" != "v$ROUNDS" ]; then
  echo "c-hook runs GREETING=$got, not v$ROUNDS" >&2
  "$moor" ps --all >&2 || true
  tail -n 30 "$work/agent-hook.log" >&2
  exit 1
fi
stop_agent

# --- idle CPU: 3 sources polling every 10 s --------------------------------
{
  for p in idle-a idle-b idle-c; do
    printf '[[source]]\nname = "%s"\nurl = "git+git://127.0.0.1:%s/%s.git"\ninterval = "10s"\ninsecure = true\n\n' \
      "$p" "$daemon_port" "$p"
  done
} >"$work/agent.toml"
"$moor" agent --config "$work/agent.toml" --metrics-addr "127.0.0.1:$http_port" \
  2>"$work/agent-idle.log" &
agent_pid=$!
for p in idle-a idle-b idle-c; do
  rev=$(git_ -C "$work/$p" rev-parse HEAD)
  until [ "$(applied "$p")" = "$rev" ]; do sleep 0.2; done
done
sleep 15
ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
hz=$(getconf CLK_TCK)
c0=$(ticks)
sleep "$IDLE"
c1=$(ticks)
cpu_ms=$(echo "($c1 - $c0) * 1000 / $hz" | bc)
pct=$(echo "scale=3; ($c1 - $c0) * 100 / ($hz * $IDLE)" | bc)
polls=$((IDLE / 10 * 3))
per_poll=$(echo "scale=1; $cpu_ms / $polls" | bc)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status")
stop_agent

echo "## Git sources: push → running with the webhook, and idle polling (issue 7)"
echo
echo "$(date -u +%Y-%m-%d), ${MOOR_BIN:+$MOOR_BIN, not the }release build, $(nproc) cores, git daemon on loopback (git://, shallow fetches),"
echo "$(git --version). bench/git-webhook.sh $ROUNDS $IDLE."
echo
echo "| measure | p50 | p90 | min | max |"
echo "| --- | --- | --- | --- | --- |"
echo "| webhook → replacement running ($ROUNDS pushes) | $(stats <"$work/hook.ns") |"
echo "| push + webhook → replacement running | $(stats <"$work/push-hook.ns") |"
echo
echo "| idle agent, 3 git sources polling every 10 s | value |"
echo "| --- | --- |"
echo "| CPU over ${IDLE} s | ${cpu_ms} ms (${pct} % of one core) |"
echo "| CPU per poll ($polls polls) | ${per_poll} ms |"
echo "| resident memory | $((rss / 1024)) MiB |"
