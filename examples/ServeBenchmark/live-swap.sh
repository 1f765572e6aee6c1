#!/usr/bin/env bash
# Load across live swaps started from the CLI: `looprpt serve --store` answers ServeBenchmark's closed-loop load
# (official OpenAI .NET client, default 3,000 mixed requests from 16 callers) while `looprpt store publish --promote`
# publishes two new versions. Prints the benchmark's figures (failures, p50/p95, tokens/s, the server's RSS, replies by
# system_fingerprint) and the count of server log lines that mention an error.
# Usage (from the repository root, after `dotnet build LoopRpt.sln -c Release`):
#   bash examples/ServeBenchmark/live-swap.sh [WORK_DIR] [extra ServeBenchmark options, e.g. --requests 3000]
set -euo pipefail
work="${1:-$(mktemp -d)}"; shift || true
port="${LOOPRPT_SWAP_PORT:-18080}"
looprpt=(dotnet src/LoopRpt.Cli/bin/Release/net10.0/LoopRpt.Cli.dll)
mkdir -p "$work"
# Three tiny models on the repository's own prose (seconds each); v1 seeds the store.
for s in 1 2 3; do
  [ -d "$work/m$s" ] || "${looprpt[@]}" train -i README.md -i docs/serving.md -o "$work/m$s" --stages pretrain:15 --seed "$s" --progress None >/dev/null
done
rm -rf "$work/store"
"${looprpt[@]}" store publish --store "$work/store" --model "$work/m1"
"${looprpt[@]}" serve --store "$work/store" --urls "http://127.0.0.1:$port" --max-concurrent 128 >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
dotnet examples/ServeBenchmark/bin/Release/net10.0/ServeBenchmark.dll --url "http://127.0.0.1:$port" --server-pid "$server" \
  --scenario load "$@" &
load=$!
sleep 8; "${looprpt[@]}" store publish --store "$work/store" --model "$work/m2" --promote
sleep 8; "${looprpt[@]}" store publish --store "$work/store" --model "$work/m3" --promote
wait $load
echo "server log lines mentioning an error or exception: $(grep -ciE 'fail|error|exception' "$work/serve.log" || true)"
