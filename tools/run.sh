#!/usr/bin/env bash
# `make run`: train with the curriculum on the embedded corpus. With CUDA, every GPU and the
# trainer's own H100 defaults; without, the small CPU configuration of configs/cpu.env.
# Any setting already in the environment wins over both.
set -euo pipefail
python=${1:-python3}
gpus=$("$python" -c "import torch; print(torch.cuda.device_count())")
export CURRICULUM=${CURRICULUM:-1}
export DATA_PATH=${DATA_PATH:-./data/datasets/embedded_mix_sp1024}
export TOKENIZER_PATH=${TOKENIZER_PATH:-./data/tokenizers/embedded_sp1024.model}
if [ "$gpus" -gt 0 ]; then
  echo "run: $gpus GPU(s), the trainer's defaults, curriculum $CURRICULUM"
  exec "$(dirname "$python")/torchrun" --standalone --nproc_per_node="$gpus" train_gpt.py
fi
while IFS='=' read -r key value; do
  case $key in ''|\#*) continue ;; esac
  [ -n "${!key+x}" ] || export "$key=$value"
done < configs/cpu.env
echo "run: no GPU; configs/cpu.env on the CPU, curriculum $CURRICULUM, ${MAX_WALLCLOCK_SECONDS}s of training"
exec "$python" train_gpt.py
