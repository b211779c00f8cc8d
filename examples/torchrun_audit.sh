#!/usr/bin/env bash
# Audit on several GPUs (or CPU processes) with torchrun: one process per device, DDP.
#
# Shows the launch line. Each rank trains on its shard; the recording pass gives every image
# to exactly one rank and the probabilities are gathered by image; only rank 0 prints and
# writes the report (README "Scale"). On several machines run it on each with torchrun's
# rendezvous options, e.g. --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=host0:29500, and
# keep the images, cache and work dir on a shared filesystem.
#
# Run:  examples/torchrun_audit.sh IMAGES LABELS.csv [OUT.parquet] [audit options...]
#       NPROC=2 examples/torchrun_audit.sh ./images labels.csv report.parquet --device cpu
# NPROC defaults to the number of GPUs (1 without any).
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
images=$1 labels=$2 out=report.parquet
shift 2
if [[ $# -ge 1 && "$1" != -* ]]; then out=$1; shift; fi
nproc=${NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}

exec torchrun --standalone --nproc_per_node="$nproc" -m labelclean audit \
    "$images" "$labels" --out "$out" "$@"
