# Sourced by the benchmarks: a private Podman (Debian's podman 4.3) as the
# second peer, with its own storage root, run root, network config dir and
# containers.conf under "$work/podman", so nothing of the host's Podman (if
# any) is touched and everything goes with "$work". Needs podman, netavark,
# aardvark-dns (the network backend with DNS, like moor's and Docker's),
# catatonit (`init: true`) and, for stacks, podman-compose.
#
#   podman_setup        # after "$work" exists; defines $podman (a wrapper)
#   podman_cleanup      # removes every container, pod, network and volume
#
# Two settings this machine needs: RLIMIT_NPROC is clamped (the default
# raises it above the hard limit, which runc refuses), and the cgroup
# manager is cgroupfs (no systemd here).

podman_setup() {
  local p="$work/podman"
  mkdir -p "$p/root" "$p/run" "$p/networks"
  cat >"$p/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
init_path = "/usr/bin/catatonit"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"
network_config_dir = "$p/networks"
CONF
  cat >"$p/podman" <<WRAP
#!/bin/sh
CONTAINERS_CONF="$p/containers.conf" exec /usr/bin/podman --root "$p/root" --runroot "$p/run" "\$@"
WRAP
  chmod +x "$p/podman"
  podman="$p/podman"
  pver=$("$podman" version -f '{{.Client.Version}}')
}

podman_cleanup() {
  [ -n "${podman:-}" ] && [ -x "$podman" ] || return 0
  "$podman" rm -af -t 0 >/dev/null 2>&1
  "$podman" pod rm -af >/dev/null 2>&1
  "$podman" network prune -f >/dev/null 2>&1
  "$podman" volume prune -f >/dev/null 2>&1
  # Podman leaves its overlay mounts under its root until told otherwise.
  "$podman" system reset -f >/dev/null 2>&1
  grep -o " $work/podman[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
}
