#!/bin/sh
# The postgres image's entrypoint, in the spirit of the official image's.
# On the first start (no cluster in $PGDATA) it creates the cluster with the
# superuser password from POSTGRES_PASSWORD, listens on every address, and
# lets the container's own subnets in with that password (scram-sha-256);
# then it becomes the server. It runs as the image's user, postgres: $PGDATA
# must already belong to postgres, as the image ships it (a new named volume
# is filled from the image, ownership included).
set -eu

wants_help() {
  for arg; do
    case "$arg" in
      -V | --version | -'?' | --help | --describe-config | -C) return 0 ;;
    esac
  done
  return 1
}

# The directly connected IPv4 subnets, from the routing table (addresses
# and masks are little-endian hex there).
subnets() {
  tail -n +2 /proc/net/route | while read -r _ dest gw _ _ _ _ mask _; do
    [ "$gw" = 00000000 ] && [ "$dest" != 00000000 ] || continue
    d=$((0x$dest)) m=$((0x$mask)) bits=0
    while [ "$m" -ne 0 ]; do
      bits=$((bits + (m & 1))) m=$((m >> 1))
    done
    echo "$((d & 255)).$((d >> 8 & 255)).$((d >> 16 & 255)).$((d >> 24 & 255))/$bits"
  done
}

if [ "${1:-}" = postgres ] && ! wants_help "$@" && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?must be set: the superuser password of the new cluster}"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \
    -E UTF8 --no-locale --auth-local=trust --auth-host=scram-sha-256
  rm -f "$pwfile"
  # jit = off: the image leaves out LLVM, which only the JIT would load.
  printf "listen_addresses = '*'\njit = off\n" >>"$PGDATA/postgresql.conf"
  for net in $(subnets); do
    echo "host all all $net scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "entrypoint: clients from $net may log in with a password"
  done
fi
exec "$@"
