#!/usr/bin/env bash
# The KV data-plane benchmarks, run by `make bench-kv` inside a fresh local stack:
#
#   infra/local/stack.sh run -- shared/connect/benches/kv_bench.sh
#
# 1. kv_set_latency.ts: sequential `kv.set` latency through the local stack, then
#    through `denokv serve` (SQLite) on this machine if $DENOKV is an executable
#    (make denokv installs it); each with two clients: Deno's own (run by Deno) and
#    the npm client @deno/kv (run by Node, from tests/kv-node/node_modules);
# 2. kv_round_trips (cargo bench): DynamoDB round trips and handler CPU per
#    operation; exits non-zero if a round-trip count differs from the expected one.
#
# From the stack: SUBKV_API_URL, SUBKV_ADMIN_TOKEN, AWS_ENDPOINT_URL, the tables.
# From make: DENO, DENO_DIR, NODE, DENOKV, DENOKV_PORT.
set -euo pipefail

root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
deno=${DENO:-$root/.venv/bin/deno}
node=${NODE:-$root/.venv/bin/node}
denokv=${DENOKV:-$root/target/denokv/bin/denokv}
denokv_port=${DENOKV_PORT:-4901}
: "${SUBKV_API_URL:?run this through infra/local/stack.sh run --}"
: "${SUBKV_ADMIN_TOKEN:?run this through infra/local/stack.sh run --}"

field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
latency() { # client (deno|node) label url token
  if [ "$1" = deno ]; then
    SUBKV_LATENCY_LABEL="$2 (Deno client)" SUBKV_KV_URL=$3 DENO_KV_ACCESS_TOKEN=$4 \
      "$deno" run --quiet --unstable-kv --allow-env --allow-net \
      "$root/shared/connect/benches/kv_set_latency.ts"
  else
    SUBKV_LATENCY_LABEL="$2 (@deno/kv client, Node)" SUBKV_KV_URL=$3 DENO_KV_ACCESS_TOKEN=$4 \
      SUBKV_KV_NODE_DIR=tests/kv-node "$node" "$root/shared/connect/benches/kv_set_latency.ts"
  fi
}

org=$(curl -sf -X POST "$SUBKV_API_URL/v1/organizations" \
  -H "Authorization: Bearer $SUBKV_ADMIN_TOKEN" -d '{"name": "kv-bench"}')
org_id=$(echo "$org" | field id)
token=$(echo "$org" | field token)
db_id=$(curl -sf -X POST "$SUBKV_API_URL/v1/organizations/$org_id/databases" \
  -H "Authorization: Bearer $token" -d '{"description": "kv latency benchmark"}' | field id)
moto_log="${SUBKV_STACK_LOG_DIR:-}/moto.log"
api_log="${SUBKV_STACK_LOG_DIR:-}/api.log"

subkv_latency() { # client
  echo "== kv_set_latency: sequential kv.set through the local stack, $1 client"
  local failed_before failed_after api_lines
  failed_before=$(grep -c ' 400 -$' "$moto_log" 2>/dev/null || true)
  api_lines=$(wc -l <"$api_log" 2>/dev/null || echo 0)
  latency "$1" "subkv local stack" "$SUBKV_API_URL/databases/$db_id/connect" "$token"
  # A commit whose cached head is stale fails on the head's condition (moto answers
  # 400; the failed condition returns the current head), then commits again on that
  # head: 2 round trips instead of 1. cargo lambda watch runs 4 instances per
  # function (--concurrency 4) and hands consecutive requests to different ones, so
  # their head caches are stale.
  failed_after=$(grep -c ' 400 -$' "$moto_log" 2>/dev/null || true)
  echo "DynamoDB requests answered 400 during the run (failed commit conditions: stale head caches): $((${failed_after:-0} - ${failed_before:-0}))"
  # The handler's own time (its log line's elapsed_us: the commit, DynamoDB included),
  # without cargo lambda watch's routing and the HTTP hops.
  tail -n +"$((api_lines + 1))" "$api_log" 2>/dev/null | python3 -c '
import json, sys
times = []
for line in sys.stdin:
    start = line.find("{")
    try:
        record = json.loads(line[start:]) if start >= 0 else {}
    except ValueError:
        continue
    if record.get("route") == "kv-atomic-write" and "elapsed_us" in record:
        times.append(record["elapsed_us"] / 1000)
times.sort()
if times:
    pct = lambda p: times[min(len(times) - 1, max(0, -(-p * len(times) // 100) - 1))]
    print(f"kv-atomic-write handler time ({len(times)} requests, from its log): "
          f"p50 {pct(50):.2f} ms, p90 {pct(90):.2f} ms, p99 {pct(99):.2f} ms")
'
  echo
}
subkv_latency deno
subkv_latency node

round_trips() {
  echo
  echo "== kv_round_trips: DynamoDB round trips and CPU per operation"
  cargo bench -p subkv-connect --bench kv_round_trips
}

if [ ! -x "$denokv" ]; then
  echo "== kv_set_latency: skipped denokv ($denokv is not installed; \`make denokv\` installs it)"
  round_trips
  exit 0
fi
# denokv has no --version; cargo install records what it installed.
version=$(grep -o 'denokv [0-9][^ ]*' "$(dirname "$denokv")/../.crates.toml" 2>/dev/null || echo denokv)
echo "== denokv serve: $version, $denokv"
if (exec 3<>"/dev/tcp/127.0.0.1/$denokv_port") 2>/dev/null; then
  echo "port $denokv_port is already in use (set DENOKV_PORT)" >&2
  exit 1
fi
tmp=$(mktemp -d)
denokv_token="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$denokv" --sqlite-path "$tmp/bench.sqlite" serve --access-token "$denokv_token" \
  --addr "127.0.0.1:$denokv_port" >"$tmp/denokv.log" 2>&1 &
denokv_pid=$!
cleanup() {
  kill "$denokv_pid" 2>/dev/null || true
  wait "$denokv_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
limit=$((SECONDS + 30))
until (exec 3<>"/dev/tcp/127.0.0.1/$denokv_port") 2>/dev/null; do
  if ! kill -0 "$denokv_pid" 2>/dev/null || [ $SECONDS -ge $limit ]; then
    echo "denokv did not start; its log:" >&2
    cat "$tmp/denokv.log" >&2
    exit 1
  fi
  sleep 0.2
done
for client in deno node; do
  echo "== kv_set_latency: sequential kv.set through denokv serve, $client client"
  latency "$client" "denokv serve (SQLite)" "http://127.0.0.1:$denokv_port" "$denokv_token"
done
cleanup
trap - EXIT

# Last: the emulator's transactions slow down as it holds more data (moto copies
# every table a transaction touches), so the latency runs go first, on a fresh one.
round_trips
