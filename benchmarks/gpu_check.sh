#!/usr/bin/env bash
# One short GPU measurement, for a session that is lent a GPU machine (the `device` tool): the
# bench table with --device cuda for the default and for a BERT-base-shaped model, JSON under
# $OUT (default ./gpu-bench). The CPU stays the reference; nothing here runs in the test suite.
set -euo pipefail
OUT=${OUT:-gpu-bench}
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA here'; print(torch.cuda.get_device_name())"
python benchmarks/bert_base.py --out "$OUT/bert-base" --epochs 1 > "$OUT/bert-base.log" 2>&1
python -m prunelens bench --device cuda --quick --skip-ablation --json "$OUT/default-cuda.json"
python -m prunelens bench --device cuda --quick --skip-ablation --model "$OUT/bert-base" \
    --data "$OUT/bert-base/dev.csv" --json "$OUT/bert-base-cuda.json"
rm -rf "$OUT/bert-base"  # 440 MB of weights: not worth bringing back
