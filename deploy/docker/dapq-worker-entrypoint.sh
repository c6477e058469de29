#!/usr/bin/env bash
# File: deploy/docker/dapq-worker-entrypoint.sh
# Starts one dapq-worker rank inside a container (installed in the images as
# /usr/local/bin/dapq-worker-entrypoint). It takes dapq-worker's own flags, passes them on and
# rewrites two of them:
#   --rank auto          -> the pod ordinal: the number after the last '-' of $POD_NAME (else
#                           $HOSTNAME), as a StatefulSet names its pods (dapq-worker-g0-1 -> 1).
#   --rendezvous_dir D   -> D/<group_id>/<generation>, a fresh directory per start of the group
#   --rendezvous D          (only when --tp > 1; D is the volume shared by the group's ranks).
#                           `--rendezvous etcd://...` (the ranks meet through etcd, as in the
#                           compose file and the Kubernetes manifests) passes through unchanged:
#                           dapq-worker keeps each start of a group apart in etcd itself.
# Why generations: Gloo's FileStore never overwrites a key, so ranks that reconnect in a directory
# used before fail ("group_id ... was already used in this rendezvous_dir"). Rank 0 creates a new
# generation each time it starts and points D/<group_id>/current at it (removing older ones); a
# rank r > 0 joins a generation at most once (it claims it with mkdir joined.r) and otherwise waits
# for rank 0 to start a new one. Any rank failing makes the whole group exit (GroupDriver: a broken
# communicator ends RunDriver/RunFollower), the container runtime restarts each rank, and the group
# re-forms by itself. A rank r > 0 that joined a generation rank 0 had just replaced times out
# after --gloo_timeout_s, restarts and joins the new one.
# Environment: DAPQ_WORKER_BIN (default dapq-worker), DAPQ_RENDEZVOUS_WAIT_S (seconds a rank > 0
# waits for a generation to join; 0, the default, waits forever), POD_NAME / HOSTNAME.
set -euo pipefail

log() { echo "dapq-worker-entrypoint: $*" >&2; }

args=("$@")
rank="0"
group_id="g0"
tp="1"
rendezvous=""
# First pass: the values that decide the rewrite (dapq-worker's defaults otherwise).
for ((i = 0; i < ${#args[@]}; i++)); do
  a="${args[i]}"
  case "$a" in
    --rank | --group_id | --tp | --rendezvous_dir | --rendezvous)
      if ((i + 1 >= ${#args[@]})); then
        log "$a needs a value"
        exit 2
      fi
      v="${args[i + 1]}"
      ;;
    --rank=* | --group_id=* | --tp=* | --rendezvous_dir=* | --rendezvous=*) v="${a#*=}" ;;
    *) continue ;;
  esac
  case "${a%%=*}" in
    --rank) rank="$v" ;;
    --group_id) group_id="$v" ;;
    --tp) tp="$v" ;;
    --rendezvous_dir) rendezvous="$v" ;;
    --rendezvous) [[ "$v" == etcd://* ]] || rendezvous="$v" ;;
  esac
done

if [[ "$rank" == "auto" ]]; then
  name="${POD_NAME:-${HOSTNAME:-}}"
  rank="${name##*-}"
  if ! [[ "$rank" =~ ^[0-9]+$ ]]; then
    log "--rank auto: pod name '$name' does not end in -<ordinal>"
    exit 2
  fi
  rank=$((10#$rank))
fi
if ! [[ "$rank" =~ ^[0-9]+$ ]]; then
  log "--rank must be a number or auto, got '$rank'"
  exit 2
fi

generation_dir=""
if [[ "$tp" =~ ^[0-9]+$ ]] && ((tp > 1)) && [[ -n "$rendezvous" ]]; then
  base="$rendezvous/$group_id"
  mkdir -p "$base"
  if ((rank == 0)); then
    gen="gen-$(date +%s%N)-$$-$RANDOM"
    mkdir "$base/$gen"
    mkdir "$base/$gen/joined.0"
    echo "$gen" >"$base/current.tmp.$$"
    mv -f "$base/current.tmp.$$" "$base/current"
    for old in "$base"/gen-*; do
      if [[ -d "$old" && "$(basename "$old")" != "$gen" ]]; then rm -rf "$old"; fi
    done
    log "group $group_id rank 0: new rendezvous generation $gen"
  else
    wait_s="${DAPQ_RENDEZVOUS_WAIT_S:-0}"
    start=$SECONDS
    next_log=$SECONDS
    while true; do
      gen="$(cat "$base/current" 2>/dev/null || true)"
      if [[ -n "$gen" ]] && mkdir "$base/$gen/joined.$rank" 2>/dev/null; then
        break
      fi
      if ((wait_s > 0 && SECONDS - start >= wait_s)); then
        log "group $group_id rank $rank: no new rendezvous generation from rank 0 in ${wait_s}s"
        exit 1
      fi
      if ((SECONDS >= next_log)); then
        log "group $group_id rank $rank: waiting for rank 0 to start a rendezvous generation"
        next_log=$((SECONDS + 30))
      fi
      sleep 1
    done
    log "group $group_id rank $rank: joining rendezvous generation $gen"
  fi
  generation_dir="$base/$gen"
fi

# Second pass: the same flags with the rank and the rendezvous directory replaced.
out=()
for ((i = 0; i < ${#args[@]}; i++)); do
  a="${args[i]}"
  case "$a" in
    --rank)
      out+=(--rank "$rank")
      i=$((i + 1))
      ;;
    --rank=*) out+=(--rank "$rank") ;;
    --rendezvous_dir)
      out+=(--rendezvous_dir "${generation_dir:-${args[i + 1]}}")
      i=$((i + 1))
      ;;
    --rendezvous_dir=*) out+=(--rendezvous_dir "${generation_dir:-${a#*=}}") ;;
    --rendezvous)
      v="${args[i + 1]}"
      [[ "$v" == etcd://* ]] || v="${generation_dir:-$v}"
      out+=(--rendezvous "$v")
      i=$((i + 1))
      ;;
    --rendezvous=*)
      v="${a#*=}"
      [[ "$v" == etcd://* ]] || v="${generation_dir:-$v}"
      out+=(--rendezvous "$v")
      ;;
    *) out+=("$a") ;;
  esac
done

exec "${DAPQ_WORKER_BIN:-dapq-worker}" "${out[@]}"
