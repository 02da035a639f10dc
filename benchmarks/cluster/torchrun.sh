#!/usr/bin/env bash
# grbench under torchrun: DDP over GPUS GPUs on each of NNODES nodes. Run it once per node, from the repository root,
# with the same RUN_ID, MASTER_ADDR and MASTER_PORT everywhere and NODE_RANK 0 .. NNODES-1:
#
#   RUN_ID=tiger-beauty-1 DATASET=beauty MODEL=tiger GPUS=8 benchmarks/cluster/torchrun.sh                 # one node
#   RUN_ID=tiger-beauty-1 DATASET=beauty MODEL=tiger NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 GPUS=8 \
#     benchmarks/cluster/torchrun.sh [key=value ...]                                                      # node 0 of 2
#
# RUN_ID is torchrun's --rdzv-id and names the run folder (<runs_dir>/<dataset>/<result_name>/torchrun-<RUN_ID>):
# the same RUN_ID after a failure resumes that run from its last checkpoint (trainer.resume=auto; MAX_RESTARTS > 0
# lets torchrun restart the workers itself, which resume the same way). Lightning reads torchrun's environment
# (RANK, LOCAL_RANK, WORLD_SIZE, ...: its TorchElasticEnvironment) and checks trainer.devices x trainer.num_nodes
# against WORLD_SIZE.
set -euo pipefail

RUN_ID=${RUN_ID:?set RUN_ID: a name for the run, the same on every node (reuse it to resume the run)}
DATASET=${DATASET:-beauty}
MODEL=${MODEL:-tiger}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
MAX_RESTARTS=${MAX_RESTARTS:-0}
PYTHON=${PYTHON:-python}
ACCELERATOR=${ACCELERATOR:-gpu}
if [ "${GPUS:-0}" -lt 1 ]; then
  echo "torchrun.sh: no GPU found; set GPUS" >&2
  exit 2
fi
# one optimizer step's batch over all GPUs; default: the recipe's (so the run stays the recipe); BATCH: each GPU's
# batch per forward pass (default GLOBAL_BATCH / GPUs; smaller ones are accumulated to GLOBAL_BATCH)
recipe_batch() {      # the recipe's step batch (track.effective_batch of the model's config for the dataset)
  "$PYTHON" - "$DATASET" "$MODEL" <<'PY'
import sys
from omegaconf import OmegaConf
from grbench.benchmarks.config import load_config
from grbench.benchmarks.track import effective_batch
print(effective_batch(OmegaConf.to_container(load_config(sys.argv[1], sys.argv[2]), resolve=True)))
PY
}
GLOBAL_BATCH=${GLOBAL_BATCH:-$(recipe_batch)}
BATCH=${BATCH:-$((GLOBAL_BATCH / (GPUS * NNODES)))}

if command -v torchrun >/dev/null 2>&1; then launch=(torchrun); else launch=("$PYTHON" -m torch.distributed.run); fi
exec "${launch[@]}" --nnodes="$NNODES" --nproc_per_node="$GPUS" --node_rank="$NODE_RANK" \
  --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="$RUN_ID" \
  --max-restarts="$MAX_RESTARTS" \
  -m grbench.benchmarks.cli bench --dataset "$DATASET" --model "$MODEL" "$@" \
  trainer.accelerator="$ACCELERATOR" trainer.devices="$GPUS" trainer.num_nodes="$NNODES" trainer.strategy=ddp \
  trainer.resume=auto data.global_batch_size="$GLOBAL_BATCH" data.batch_size="$BATCH"
