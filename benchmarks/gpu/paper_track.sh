#!/usr/bin/env bash
# The paper-track runs on a GPU node without network, from the offline bundle (`make gpu-bundle`):
#   benchmarks/gpu/paper_track.sh BUNDLE OUT [--minutes 9] [key=value ...]
# Installs the bundle's wheels (omegaconf, grbench) into a scratch folder on PYTHONPATH with pip --no-index --no-deps:
# the image's torch, lightning and transformers stay as they are. Then runs benchmarks/gpu/paper_track.py: every run
# of benchmarks/configs/paper_track.yaml for the bundle's dataset, one after another, under one wall budget; each
# result JSON lands in OUT as soon as it exists, and OUT/summary.txt holds the table.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUNDLE OUT [--minutes 9] [key=value ...]" >&2
  exit 2
fi
bundle=$(cd "$1" && pwd)
out=$2
shift 2
python=${PYTHON:-python3}
work=${GRBENCH_WORK:-$(mktemp -d)}
mkdir -p "$work/site" "$out"
"$python" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$work/site" \
  "$bundle"/wheels/*.whl
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c "import torch, lightning; print(f'torch {torch.__version__}, lightning {lightning.__version__}, '
              f'cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"none\"}')"
exec "$python" -m grbench.benchmarks.gpu.paper_track --bundle "$bundle" --out "$out" --work "$work" "$@"
