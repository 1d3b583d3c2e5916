#!/usr/bin/env bash
# The GPU checks, in one go (a lent GPU machine is short of time): the detector tests, which run
# on CUDA there, then bench.scoring and bench.ape_gpu. Outputs go to $OUT (default ./gpu-out).
# Packages the machine lacks (river, for the peer tests) can sit as wheels in .whl/.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi -L; nproc
python3 -c "import torch,sys;print(sys.version.split()[0],torch.__version__,torch.cuda.get_device_name(0))"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/detectors 2>&1 | tee "$OUT/pytest.log" | tail -30
timeout 150 python3 -m bench.scoring --json --repeat 5 | tee "$OUT/scoring.json"
timeout 120 python3 -m bench.ape_gpu 2>&1 | tee "$OUT/ape_gpu.txt"
