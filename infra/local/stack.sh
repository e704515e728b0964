#!/usr/bin/env bash
# The local stack: moto server (DynamoDB, DynamoDB Streams, S3, KMS) on 127.0.0.1
# and `cargo lambda watch` serving every route at its production path.
#
#   stack.sh dev              start, print the API URL and admin token, stay in the foreground
#   stack.sh run -- CMD...    start, run CMD against the stack, stop; exits with CMD's status
#
# Ports: SUBKV_PORT (API, default 9000), SUBKV_EMULATOR_PORT (moto, default 4566).
# Every process it starts is stopped on exit, Ctrl-C or SIGTERM.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
venv="$root/.venv"
mode=${1:-dev}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift

api_port=${SUBKV_PORT:-9000}
emulator_port=${SUBKV_EMULATOR_PORT:-4566}
state_dir="$root/target/local-stack/$api_port"
mkdir -p "$state_dir"

if [ -z "${SUBKV_ADMIN_TOKEN:-}" ]; then
  SUBKV_ADMIN_TOKEN="skv_admin_$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
fi

# What every function (and the bootstrap) reads.
export SUBKV_ADMIN_TOKEN
export AWS_ENDPOINT_URL="http://127.0.0.1:$emulator_port"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=subkv-local AWS_SECRET_ACCESS_KEY=subkv-local
unset AWS_PROFILE AWS_SESSION_TOKEN
export SUBKV_CONTROL_TABLE=subkv-control
export SUBKV_BACKUP_KMS_KEY_ID=alias/subkv-backup-secrets
export SUBKV_KV_DATA_TABLE=subkv-kv-data SUBKV_KV_LOG_TABLE=subkv-kv-log
export SUBKV_DATA_TOKEN_KEY_ID=alias/subkv-data-token
# How often the local scheduler runs the expiry sweeper (AWS: an EventBridge rule),
# and how long one run sweeps (AWS: 50 s of each minute; here the scheduler runs
# the functions one after another).
sweep_seconds=${SUBKV_SWEEP_SECONDS:-2}
export SUBKV_SWEEP_BUDGET_SECONDS=${SUBKV_SWEEP_BUDGET_SECONDS:-1}
# Open watches per database (AWS: 50), low so tests/kv/watch_caps_test.ts reaches it.
export SUBKV_WATCH_MAX_PER_DATABASE=${SUBKV_WATCH_MAX_PER_DATABASE:-8}
# Small snapshot chunks, so the tests' databases are snapshotted in several steps.
export SUBKV_BACKUP_SNAPSHOT_ITEMS=${SUBKV_BACKUP_SNAPSHOT_ITEMS:-8}
# A backup leaves the catch-up's due list once caught up and older than this
# (AWS: 60 s, how long an instance trusts that a database has no backup).
export SUBKV_BACKUP_ABSENT_TTL_SECONDS=${SUBKV_BACKUP_ABSENT_TTL_SECONDS:-2}
# How often the scheduler runs restore-database (AWS: every minute), how long one
# invocation restores (AWS: up to 840 s), and the writes per step (AWS: 1000): small,
# so that the tests' restores take several steps and several invocations.
restore_seconds=${SUBKV_RESTORE_SECONDS:-1}
export SUBKV_RESTORE_BUDGET_SECONDS=${SUBKV_RESTORE_BUDGET_SECONDS:-2}
export SUBKV_RESTORE_STEP_WRITES=${SUBKV_RESTORE_STEP_WRITES:-100}
# How often the scheduler runs kv-purge-deleted (AWS: every minute), how long one run
# purges (AWS: 50 s), and how long a deleted database stays on its list once empty
# (AWS: 900 s, the longest a function begun before the deletion may write): short,
# so the tests see a deletion's storage gone and its purge finished.
purge_seconds=${SUBKV_PURGE_SECONDS:-2}
export SUBKV_PURGE_BUDGET_SECONDS=${SUBKV_PURGE_BUDGET_SECONDS:-1}
export SUBKV_PURGE_SETTLE_SECONDS=${SUBKV_PURGE_SETTLE_SECONDS:-5}
# How often a data-plane instance flushes its usage tally (AWS: 60 s): a second,
# so the usage tests see a workload's counts without waiting a minute.
export SUBKV_USAGE_FLUSH_SECONDS=${SUBKV_USAGE_FLUSH_SECONDS:-1}
# How long an instance trusts an organization's limits and month (AWS: 60 s).
export SUBKV_QUOTA_CACHE_SECONDS=${SUBKV_QUOTA_CACHE_SECONDS:-1}
# How often it runs backup-forward's scheduled catch-up.
backup_catchup_seconds=${SUBKV_BACKUP_CATCHUP_SECONDS:-2}
# The local stack backs up to the emulator's S3 over http on loopback.
export SUBKV_ALLOW_INSECURE_ENDPOINTS=true
export RUST_LOG=${RUST_LOG:-info}

sessions=()   # session ids of the services started (moto, cargo lambda watch)
helpers=()    # plain child processes (the log follower)

session_of() { # the session id of a pid (field 6 of /proc/PID/stat)
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  set -- $stat
  echo "$4"
}

pids_in_session() {
  local sid=$1 stat pid
  for stat in /proc/[0-9]*/stat; do
    pid=${stat#/proc/}; pid=${pid%/stat}
    [ "$(session_of "$pid" 2>/dev/null)" = "$sid" ] && echo "$pid"
  done
  return 0
}

stop_all() {
  local sid pids deadline
  trap - EXIT INT TERM
  set +e  # best effort from here on: a process that is already gone is not an error
  [ ${#helpers[@]} -gt 0 ] && kill "${helpers[@]}" 2>/dev/null
  for sid in "${sessions[@]}"; do
    # The leader first, so cargo lambda can pass SIGTERM on to its functions.
    kill -TERM "$sid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 10))
  for sid in "${sessions[@]}"; do
    while pids=$(pids_in_session "$sid") && [ -n "$pids" ]; do
      if [ $SECONDS -ge $deadline ]; then
        kill -KILL $pids 2>/dev/null || true
        break
      fi
      kill -TERM $pids 2>/dev/null || true
      wait_briefly
    done
  done
}

wait_briefly() { sleep 0.2; }  # polling interval of the readiness and shutdown loops

on_signal() {
  echo "stack: stopping" >&2
  stop_all
  exit 130
}
trap stop_all EXIT
trap on_signal INT TERM

start_in_session() { # name logfile cmd...: runs cmd in a session of its own
  local name=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 < /dev/null &
  local pid=$!
  sessions+=("$pid")
  echo "stack: $name started (pid $pid, log $log)" >&2
}

wait_for_port() { # name port pid seconds
  local name=$1 port=$2 pid=$3 limit=$((SECONDS + $4))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "stack: $name exited before listening on $port; its log:" >&2
      tail -n 40 "$state_dir/$name.log" >&2 || true
      exit 1
    fi
    if [ $SECONDS -ge $limit ]; then
      echo "stack: $name is not listening on $port after $4 s" >&2
      exit 1
    fi
    wait_briefly
  done
}

for port in "$api_port" "$emulator_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "stack: port $port is already in use (set SUBKV_PORT / SUBKV_EMULATOR_PORT)" >&2
    exit 1
  fi
done

# moto_server, with DynamoDB requests serialized (moto's transactions are not atomic otherwise).
start_in_session moto "$state_dir/moto.log" \
  "$venv/bin/python" "$root/infra/local/moto_server.py" -H 127.0.0.1 -p "$emulator_port"
wait_for_port moto "$emulator_port" "${sessions[-1]}" 60

"$root/target/debug/subkv-local" bootstrap

# Every function instance of cargo lambda watch puts an inotify watch on each
# directory of the workspace, .venv included (even with --ignore-changes): 18
# functions, up to 4 instances each, times ~10,000 directories. Past the kernel's
# limit a function's watcher fails and cargo lambda answers its requests with a
# 500 of its own. As root, raise the limits (each watch costs the kernel ~1 KB);
# otherwise say so.
raise_limit() { # file minimum
  local current
  current=$(cat "$1" 2>/dev/null || echo 0)
  if [ "$current" -lt "$2" ]; then
    if { echo "$2" > "$1"; } 2>/dev/null; then
      echo "stack: raised $(basename "$1") from $current to $2 (cargo lambda watch's watchers)" >&2
    else
      echo "stack: $(basename "$1") is $current, below $2: functions may fail to start (run as root, or raise it)" >&2
    fi
  fi
}
raise_limit /proc/sys/fs/inotify/max_user_watches 1048576
raise_limit /proc/sys/fs/inotify/max_user_instances 1024

watch_flags=(--invoke-address 127.0.0.1 --invoke-port "$api_port" --concurrency 4)
if [ "$mode" != dev ]; then
  watch_flags+=(--ignore-changes)
fi
# Each function gets its own key from the workspace Cargo.toml (its role, enforced by
# the emulator: infra/local/iam.py); one without gets this key, which may do nothing.
start_in_session api "$state_dir/api.log" \
  env PATH="$venv/bin:$PATH" AWS_ACCESS_KEY_ID=local-role-none cargo lambda watch "${watch_flags[@]}"
wait_for_port api "$api_port" "${sessions[-1]}" 300

# Scheduled functions: what EventBridge rules do in AWS, through watch's invoke API.
start_in_session scheduler "$state_dir/scheduler.log" \
  python3 "$root/infra/local/scheduler.py" "http://127.0.0.1:$api_port" \
  "kv-sweep-expired=$sweep_seconds" "backup-forward=$backup_catchup_seconds" \
  "restore-database=$restore_seconds" "kv-purge-deleted=$purge_seconds"

# The change log's stream to backup-forward: what the event source mapping does in AWS.
start_in_session stream-pump "$state_dir/stream-pump.log" \
  "$venv/bin/python" "$root/infra/local/stream_pump.py" "http://127.0.0.1:$api_port" \
  backup-forward subkv-kv-log --failure-file "$state_dir/stream-failures.jsonl" \
  --stream-access-key-id local-role-backup-forward

# The data table's stream to kv-storage-usage (its mapping, KvStorageUsageStream):
# every record is a count, so a failing batch is retried forever, as the mapping's
# MaximumRetryAttempts -1 does.
start_in_session storage-pump "$state_dir/storage-pump.log" \
  "$venv/bin/python" "$root/infra/local/stream_pump.py" "http://127.0.0.1:$api_port" \
  kv-storage-usage subkv-kv-data --max-retries -1 --batch-size 1000 \
  --failure-file "$state_dir/storage-stream-failures.jsonl" \
  --stream-access-key-id local-role-kv-storage-usage

export SUBKV_API_URL="http://127.0.0.1:$api_port"
export SUBKV_STACK_LOG_DIR="$state_dir"
case "$mode" in
  dev)
    cat <<EOF

subkv is running.
  API base URL:   $SUBKV_API_URL/v1
  admin token:    $SUBKV_ADMIN_TOKEN
  emulator:       $AWS_ENDPOINT_URL (moto: DynamoDB, Streams, S3, KMS)
  logs:           $state_dir/
  backups:        stream pump: subkv-kv-log's stream -> backup-forward (stream-pump.log,
                  discarded batches in stream-failures.jsonl); catch-up every ${backup_catchup_seconds} s (scheduler.log)
  storage usage:  stream pump: subkv-kv-data's stream -> kv-storage-usage (storage-pump.log,
                  retried forever; storage-stream-failures.jsonl stays empty)
Create an organization:
  curl -s -X POST $SUBKV_API_URL/v1/organizations -H "Authorization: Bearer $SUBKV_ADMIN_TOKEN" -d '{"name":"acme"}'
Ctrl-C stops everything.
EOF
    tail -n +1 -f "$state_dir/api.log" &
    helpers+=("$!")
    wait "${sessions[1]}" || true
    echo "stack: cargo lambda watch exited" >&2
    exit 1
    ;;
  run)
    set +e
    "$@"
    status=$?
    set -e
    if [ $status -ne 0 ]; then
      echo "stack: command failed ($status); last lines of the API log:" >&2
      tail -n 60 "$state_dir/api.log" >&2 || true
    fi
    exit $status
    ;;
  *)
    echo "usage: stack.sh dev | stack.sh run -- CMD..." >&2
    exit 2
    ;;
esac
