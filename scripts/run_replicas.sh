#!/usr/bin/env bash
# N data-parallel teacher replicas, each a vLLM server plus a `distill generate` client that owns one shard of the
# prompts, all writing ONE output folder; then `distill stats` on it. Plain shell, for one machine or a few hosts
# (Slurm: scripts/slurm/replicas.sbatch).
#
# Usage:
#   scripts/run_replicas.sh --help
#   one 8-GPU node, 4 replicas of a 2-GPU teacher:
#     NUM_REPLICAS=4 TP=2 MODEL=Qwen/QwQ-32B SERVED_MODEL_NAME=Qwen/QwQ-32B \
#     GENERATE_ARGS="--source problems.parquet -n 4 --out runs/qwq" scripts/run_replicas.sh
#   three 8 x H200 hosts, one R1 replica each (servers started over ssh, clients here):
#     NUM_REPLICAS=3 HOSTS=h200-a,h200-b,h200-c scripts/run_replicas.sh
#   servers already running on HOSTS at BASE_PORT, BASE_PORT+1, ...: START_SERVERS=0 ...
#   this repository's CPU machine, two replicas of the embedded SmolLM2 on 127.0.0.1:
#     MODEL=$(python -c 'from distill.models import embedded_model_dir as d; print(d())') \
#     SERVED_MODEL_NAME=smollm2-135m TP=1 GPUS_PER_REPLICA=0 MAX_MODEL_LEN=2048 \
#     VLLM_SERVE="python -m vllm.entrypoints.openai.api_server" \
#     VLLM_EXTRA_ARGS="--dtype float32 --gpu-memory-utilization 0.25" \
#     GENERATE_ARGS="--source reasoning-gym:basic_arithmetic --num-prompts 6 -n 2 --max-tokens 32 --out runs/smoke" \
#     OUT=runs/smoke scripts/run_replicas.sh
#
# Replica i (python -m distill.launchers replicas: round-robin over HOSTS, ports BASE_PORT, BASE_PORT+1, ... on a
# host, GPUS_PER_REPLICA consecutive GPUs each) runs, from `python -m distill.launchers render ...`:
#   CUDA_VISIBLE_DEVICES=<its GPUs> vllm serve MODEL --served-model-name NAME --host 0.0.0.0 --port PORT_i
#       --tensor-parallel-size TP --pipeline-parallel-size PP --max-model-len 32768 --trust-remote-code ...
#   python -m distill.launchers wait http://HOST_i:PORT_i/health --timeout 3600 ...
#   distill run RECIPE --until generate --set generate.base_url=http://HOST_i:PORT_i/v1 ...
#       --set generate.num_shards=N --set generate.shard_index=i
#     (or: distill generate GENERATE_ARGS --engine openai --base-url ... --num-shards N --shard-index i --resume)
# and at the end: distill stats OUT (each of the recipe's generate folders without OUT).
# A server on another host is started with `ssh HOST "cd REMOTE_DIR && ... nohup vllm serve ... &"`, and stopped
# at exit; the clients run here and write here (or to a folder all hosts share, for a later resume elsewhere).
# Rerunning the script resumes: finished samples are skipped.
#
# Knobs (environment variables, default in brackets):
#   NUM_REPLICAS [2]  HOSTS [127.0.0.1] (comma-separated)  BASE_PORT [8000]
#   MODEL [deepseek-ai/DeepSeek-R1]  SERVED_MODEL_NAME [MODEL]
#   TP [8]  PP [1]  GPUS_PER_REPLICA [TP x PP; 0 = do not set CUDA_VISIBLE_DEVICES]  GPUS_PER_HOST [8]
#   MAX_MODEL_LEN [32768]  VLLM_SERVE [vllm serve]  VLLM_EXTRA_ARGS [--trust-remote-code --max-num-seqs 256]
#   START_SERVERS [1]  SSH [ssh]  REMOTE_DIR [this directory, on the other hosts]
#   REMOTE_SETUP []  run first on the other hosts, e.g. "source ~/venv/bin/activate"
#   HEALTH_TIMEOUT [3600]  LOG_DIR [logs/replicas]
#   RECIPE [recipes/teachers/deepseek-r1.yaml]  GENERATE_ENTRIES []  GENERATE_ARGS []  OUT []
#   CONCURRENCY [256] (per client)  PYTHON [python]  DISTILL [distill]
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

NUM_REPLICAS=${NUM_REPLICAS:-2}
HOSTS=${HOSTS:-127.0.0.1}
BASE_PORT=${BASE_PORT:-8000}
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1}
SERVED_MODEL_NAME=${SERVED_MODEL_NAME:-$MODEL}
TP=${TP:-8}
PP=${PP:-1}
GPUS_PER_REPLICA=${GPUS_PER_REPLICA:-$((TP * PP))}
GPUS_PER_HOST=${GPUS_PER_HOST:-8}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-32768}
export VLLM_SERVE=${VLLM_SERVE:-vllm serve}
VLLM_EXTRA_ARGS=${VLLM_EXTRA_ARGS:---trust-remote-code --max-num-seqs 256}
START_SERVERS=${START_SERVERS:-1}
SSH=${SSH:-ssh}
REMOTE_DIR=${REMOTE_DIR:-$PWD}
REMOTE_SETUP=${REMOTE_SETUP:-}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-3600}
LOG_DIR=${LOG_DIR:-logs/replicas}
RECIPE=${RECIPE:-recipes/teachers/deepseek-r1.yaml}
GENERATE_ENTRIES=${GENERATE_ENTRIES:-}
GENERATE_ARGS=${GENERATE_ARGS:-}
OUT=${OUT:-}
CONCURRENCY=${CONCURRENCY:-256}
PYTHON=${PYTHON:-python}
DISTILL=${DISTILL:-distill}

render_into() {  # render_into NAME KIND ARGS...: the array NAME becomes what `distill.launchers render` prints
  local name=$1 line
  shift
  line=$("$PYTHON" -m distill.launchers render "$@")
  eval "$name=($line)"
}
is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == "$(hostname)" ]]; }

mkdir -p "$LOG_DIR"
PLAN=$("$PYTHON" -m distill.launchers replicas --num-replicas "$NUM_REPLICAS" --hosts "$HOSTS" \
  --base-port "$BASE_PORT" --gpus-per-replica "$GPUS_PER_REPLICA" --gpus-per-host "$GPUS_PER_HOST")
read -r -a EXTRA <<<"$VLLM_EXTRA_ARGS"
read -r -a GEN <<<"$GENERATE_ARGS"
read -r -a DISTILL_CMD <<<"$DISTILL"
read -r -a SSH_CMD <<<"$SSH"

LOCAL_PIDS=()   # servers started here
REMOTE_PIDS=()  # "host pid" of servers started over ssh
CLIENT_PIDS=()
cleanup() {
  local pid entry rhost rpid
  for pid in "${CLIENT_PIDS[@]}" "${LOCAL_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for entry in "${REMOTE_PIDS[@]}"; do
    read -r rhost rpid <<<"$entry"
    "${SSH_CMD[@]}" "$rhost" "kill $rpid" 2>/dev/null || true
  done
  for pid in "${LOCAL_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Servers
declare -A SERVER_PID=()
if [[ $START_SERVERS == 1 ]]; then
  while IFS=$'\t' read -r index host port gpus; do
    render_into SERVE serve --model "$MODEL" --served-model-name "$SERVED_MODEL_NAME" --port "$port" \
      --tp "$TP" --pp "$PP" --max-model-len "$MAX_MODEL_LEN" -- "${EXTRA[@]}"
    log=$LOG_DIR/server-$index.log
    devices=()
    if [[ $gpus != all ]]; then devices=(env "CUDA_VISIBLE_DEVICES=$gpus"); fi
    echo "+ [replica $index on $host] ${devices[*]} ${SERVE[*]} > $log" >&2
    if is_local "$host"; then
      "${devices[@]}" "${SERVE[@]}" >"$log" 2>&1 &
      LOCAL_PIDS+=($!)
      SERVER_PID[$index]=$!
    else
      # Only the server goes to the background, with every stream redirected, so that ssh returns at once.
      remote="${REMOTE_SETUP:+$REMOTE_SETUP && }cd $(printf %q "$REMOTE_DIR") && { nohup ${devices[*]} \
$(printf '%q ' "${SERVE[@]}") </dev/null >$(printf %q "$log") 2>&1 & echo \$!; }"
      REMOTE_PIDS+=("$host $("${SSH_CMD[@]}" "$host" "$remote")")
    fi
  done <<<"$PLAN"
fi

# 2. Wait until every server answers (a server that exits fails the wait at once, with its log's tail)
while IFS=$'\t' read -r index host port _; do
  pid_args=()
  if [[ -n ${SERVER_PID[$index]:-} ]]; then pid_args=(--pid "${SERVER_PID[$index]}"); fi
  "$PYTHON" -m distill.launchers wait "http://$host:$port/health" --timeout "$HEALTH_TIMEOUT" \
    --log "$LOG_DIR/server-$index.log" "${pid_args[@]}"
done <<<"$PLAN"

# 3. One client per replica, each owning one shard, all at once
CLIENT_ARGS=(--model "$SERVED_MODEL_NAME" --concurrency "$CONCURRENCY" --num-shards "$NUM_REPLICAS"
  --distill "$DISTILL")
while IFS=$'\t' read -r index host port _; do
  if [[ -n $GENERATE_ARGS ]]; then
    render_into CLIENT client "${CLIENT_ARGS[@]}" --base-url "http://$host:$port/v1" --shard-index "$index" \
      -- "${GEN[@]}"
  else
    render_into CLIENT client "${CLIENT_ARGS[@]}" --base-url "http://$host:$port/v1" --shard-index "$index" \
      --recipe "$RECIPE" --entries "$GENERATE_ENTRIES"
  fi
  echo "+ [client $index] ${CLIENT[*]} > $LOG_DIR/client-$index.log" >&2
  "${CLIENT[@]}" >"$LOG_DIR/client-$index.log" 2>&1 &
  CLIENT_PIDS+=($!)
done <<<"$PLAN"
failed=0
for index in "${!CLIENT_PIDS[@]}"; do
  if ! wait "${CLIENT_PIDS[$index]}"; then
    echo "client $index failed; last lines of $LOG_DIR/client-$index.log:" >&2
    tail -n 20 "$LOG_DIR/client-$index.log" >&2
    failed=1
  fi
done
CLIENT_PIDS=()

# 4. Check the folder(s): counts, duplicate ids across shards, unreadable files
if [[ -n $OUT ]]; then
  OUTS=("$OUT")
elif [[ -z $GENERATE_ARGS ]]; then
  mapfile -t OUTS < <("$PYTHON" -m distill.launchers outputs "$RECIPE" --entries "$GENERATE_ENTRIES")
else
  OUTS=()
  echo "set OUT to the --out of GENERATE_ARGS to check it with distill stats" >&2
fi
for out in "${OUTS[@]}"; do
  "${DISTILL_CMD[@]}" stats "$out"
done
if [[ $failed == 1 ]]; then
  echo "error: some clients failed; rerun the script to resume them" >&2
  exit 1
fi
