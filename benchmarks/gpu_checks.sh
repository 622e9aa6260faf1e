#!/usr/bin/env bash
# The checks that need a GPU, prepared to fit a device session (15 minutes of device time in all).
#
#   bash benchmarks/gpu_checks.sh OUT_DIR bench      # ~4 min: CUDA tests, train / seeds / simulate benchmarks
#   bash benchmarks/gpu_checks.sh OUT_DIR validate   # < 10 min: linearcnn validate --config gpu
#
# Runs from the repository root with the machine's own python3 (PyTorch with CUDA; sympy, typer,
# rich, scikit-image, hypothesis are in the device image) and the package from the working tree
# (PYTHONPATH, no install). The benchmarks' baseline is benchmarks/baselines.py, in the
# repository. Every result lands in OUT_DIR as at most 8 files (the device
# tool returns no more): JSON and logs as they are, figures and reports packed into one .tgz.
set -u -o pipefail
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR bench|validate}
stage=${2:?usage: bash benchmarks/gpu_checks.sh OUT_DIR bench|validate}
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
$py -c "import torch, sys; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" >> "$out/gpu.txt" 2>&1

case "$stage" in
bench)
  # Tests that use CUDA when present (device-parametrised property tests and the CUDA-only test).
  timeout 150 $py -m pytest -q -p no:cacheprovider -n 4 tests/test_patches.py tests/test_patch_stats_exact.py \
    tests/test_train_together.py tests/test_dynamics.py tests/test_train.py tests/test_first_layer_init.py > "$out/pytest.log" 2>&1
  echo "pytest exit $?" >> "$out/pytest.log"
  timeout 150 $py benchmarks/bench_train.py --steps 50 --repeats 2 --device cuda \
    --out "$out/train.json" > "$out/bench.log" 2>&1
  timeout 120 $py benchmarks/bench_seeds.py --seeds 8 --steps 50 --width 16 --device cuda \
    --out "$out/seeds.json" >> "$out/bench.log" 2>&1
  timeout 90 $py benchmarks/bench_simulate.py --out "$out/simulate.json" >> "$out/bench.log" 2>&1
  echo "bench exit $?" >> "$out/bench.log"
  ;;
validate)
  work=$(mktemp -d)
  timeout 570 $py -m linearcnn validate --config gpu --device cuda --results "$work/results" --figures "$work/figures" \
    --report "$work/REPORT.md" --run-dir "$work/runs" > "$out/validate.log" 2>&1
  echo "validate exit $?" >> "$out/validate.log"
  tar czf "$out/validation.tgz" -C "$work" results figures REPORT.md 2>> "$out/validate.log"
  ;;
*)
  echo "unknown stage $stage; expected bench or validate" >&2
  exit 2
  ;;
esac
