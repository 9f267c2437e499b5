#!/usr/bin/env bash
# Set up the lent GPU machine (Python 3.12, torch 2.11 + CUDA, transformers 5.17; no PyAV/faiss/trl) for
# this project: install the wheels carried in .wheels/ (fetch them here first, see below) without touching
# torch, then the project itself without dependencies. Idempotent; ~20 s.
#
#   pip download --no-deps --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d .wheels/a av==18.1.0
#   pip download ... -d .wheels/b transformers==5.24.0 tokenizers==0.23.3 huggingface_hub==2.4.0 \
#       accelerate==1.15.0 safetensors==0.8.0 trl==1.16.0
#   pip download ... -d .wheels/c httpx2 'click>=8.4.2' 'hf-xet>=1.6,<2'     # huggingface_hub 2.4's deps (with theirs)
#   (faiss-cpu does not fit beside them in 64 MiB and is optional: Flat search runs as a torch matmul)
#   device run (carry [".wheels"]): bash bench/device_setup.sh && <command>
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --no-deps --no-index .wheels/*/*.whl 2>&1 | grep -v "^WARNING" || true
python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING" || true
python - <<'PY'
import torch, transformers, av, accelerate
import videosearch_r1
print(f"torch {torch.__version__} cuda {torch.cuda.is_available()} transformers {transformers.__version__} "
      f"av {av.__version__} accelerate {accelerate.__version__}")
PY
