# Sourced by the benchmarks: a private Docker Engine (Debian's docker.io) as
# a peer, with its own data root, exec root, pidfile and socket under
# "$work", no default bridge and no iptables rules, so nothing of the host's
# Docker (if any) is touched and everything goes with "$work".
#
#   dockerd_start HOST  # after "$work" exists: starts it listening on HOST
#                       # (unix://…), waits until it answers; sets dockerd_pid
#
# Stopping it is the caller's: kill "$dockerd_pid" in its cleanup.

dockerd_start() {
  dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "$1" \
    --pidfile "$work/docker.pid" --bridge=none --iptables=false --ip6tables=false \
    --storage-driver=overlay2 >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 300); do /usr/bin/docker -H "$1" info >/dev/null 2>&1 && break; sleep 0.2; done
}
