#!/usr/bin/env bash
# File: deploy/docker/runtime-packages.sh
# Prints, one per line, the Debian/Ubuntu packages that own the shared libraries the given
# binaries load (ldd, then dpkg -S), so a slim runtime image installs exactly those. Used by the
# build stage of Dockerfile.cpu and Dockerfile.cuda; fails when a library is missing or belongs
# to no package (it would be absent from the runtime image).
# Usage: runtime-packages.sh BINARY...
set -euo pipefail
if (($# == 0)); then
  echo "usage: $0 BINARY..." >&2
  exit 2
fi
libs="$(for b in "$@"; do ldd "$b"; done)"
if grep -q "not found" <<<"$libs"; then
  echo "runtime-packages: unresolved libraries:" >&2
  grep "not found" <<<"$libs" >&2
  exit 1
fi
status=0
packages=()
while read -r lib; do
  # dpkg knows a file under the path its package installed it to: try the path ldd printed,
  # then the path with symlinks resolved (/lib -> /usr/lib on merged-/usr systems).
  owner="$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true)"
  if [[ -z "$owner" ]]; then
    echo "runtime-packages: $lib belongs to no package" >&2
    status=1
    continue
  fi
  # "pkg-a:amd64, pkg-b:amd64: /path" -> pkg-a, pkg-b
  while read -r p; do
    packages+=("$p")
  done < <(sed -E 's/: \/.*$//' <<<"$owner" | tr ',' '\n' | sed -E 's/^ +//; s/:.*$//')
done < <(awk '/=> \// {print $3}' <<<"$libs" | sort -u)
if ((${#packages[@]})); then printf '%s\n' "${packages[@]}" | sort -u; fi
exit "$status"
