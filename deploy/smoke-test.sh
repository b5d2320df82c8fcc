#!/usr/bin/env bash
# Smoke test of a built image: runs it with a read-only root filesystem (as the Kubernetes
# manifests do), waits for /ready, sends a completion, checks the metrics the HPA uses and the
# HEALTHCHECK, then stops it while a request is in flight: the request must finish and the
# container exit 0 (SIGTERM drain).
# Usage: deploy/smoke-test.sh [IMAGE] [MODEL_CACHE_DIR]
#   IMAGE: default switchyard:cpu. MODEL_CACHE_DIR: mounted at /models (default: a fresh named
#   volume, so the model is fetched from PyPI inside the container). Extra `docker run` flags:
#   DOCKER_RUN_FLAGS (e.g. "--gpus all"). Port: SMOKE_PORT (default 18080).
set -euo pipefail
IMAGE="${1:-switchyard:cpu}"
CACHE="${2:-switchyard-smoke-models}"
PORT="${SMOKE_PORT:-18080}"
NAME="switchyard-smoke-$$"
URL="http://127.0.0.1:$PORT"
cleanup() { docker rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# shellcheck disable=SC2086
docker run -d --name "$NAME" --read-only --tmpfs /tmp -p "$PORT:8080" -v "$CACHE:/models" \
  ${DOCKER_RUN_FLAGS:-} "$IMAGE" >/dev/null
t0=$(date +%s)
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/ready")" = 200 ]; do
  if [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" != true ]; then
    docker logs "$NAME" >&2; echo "smoke: container exited" >&2; exit 1
  fi
  [ $(( $(date +%s) - t0 )) -lt 900 ] || { docker logs "$NAME" >&2; echo "smoke: not ready" >&2; exit 1; }
  sleep 1
done
echo "smoke: /ready 200 after $(( $(date +%s) - t0 )) s: $(curl -s "$URL/ready")"
echo "smoke: /health: $(curl -s "$URL/health")"
echo "smoke: user in container: $(docker exec "$NAME" id)"
out=$(curl -sf "$URL/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The capital of France is", "max_tokens": 16, "temperature": 0}')
echo "smoke: completion: $out"
echo "$out" | grep -q '"completion_tokens":16' || { echo "smoke: bad completion" >&2; exit 1; }
metrics=$(curl -s "$URL/metrics")
for m in num_requests_waiting num_requests_running kv_cache_usage_perc; do
  echo "$metrics" | grep -q "^switchyard:$m{" || { echo "smoke: metric switchyard:$m missing" >&2; exit 1; }
done
echo "smoke: /metrics has switchyard:num_requests_waiting, num_requests_running, kv_cache_usage_perc"
for _ in $(seq 1 40); do
  h=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$NAME")
  [ "$h" = starting ] || break; sleep 1
done
echo "smoke: HEALTHCHECK status: $h"
[ "$h" = healthy ] || { echo "smoke: HEALTHCHECK not healthy" >&2; exit 1; }
body=$(mktemp)
curl -s "$URL/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0}' > "$body" &
pid=$!
sleep 0.5
docker stop -t 60 "$NAME" >/dev/null
wait "$pid"
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
echo "smoke: stopped during a 200-token request: exit code $code; request: $(grep -o '"usage":{[^}]*' "$body")"
grep -q '"completion_tokens":200' "$body" || { echo "smoke: in-flight request was cut" >&2; exit 1; }
[ "$code" = 0 ] || { echo "smoke: exit code $code" >&2; exit 1; }
docker logs "$NAME" 2>&1 | grep -E 'serving|draining|stopped' | sed 's/^/smoke: log: /'
rm -f "$body"
echo "smoke: ok"
