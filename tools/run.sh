#!/usr/bin/env bash
# `make run`: train with the curriculum on the embedded corpus. With CUDA, every GPU with the
# configuration for that many (configs/1xh100.env or configs/8xh100.env; other counts get the
# trainer's defaults, the record's 8xH100 settings); without, configs/cpu.env on the CPU.
# Any setting already in the environment wins over the file.
set -euo pipefail
python=${1:-python3}
gpus=$("$python" -c "import torch; print(torch.cuda.device_count())")
export CURRICULUM=${CURRICULUM:-1}
export DATA_PATH=${DATA_PATH:-./data/datasets/embedded_mix_sp1024}
export TOKENIZER_PATH=${TOKENIZER_PATH:-./data/tokenizers/embedded_sp1024.model}
case $gpus in
  0) config=configs/cpu.env ;;
  1) config=configs/1xh100.env ;;
  8) config=configs/8xh100.env ;;
  *) config="" ;;
esac
if [ -n "$config" ]; then
  while IFS='=' read -r key value; do
    case $key in ''|\#*) continue ;; esac
    [ -n "${!key+x}" ] || export "$key=$value"
  done < "$config"
fi
if [ "$gpus" -gt 0 ]; then
  label=${config:-"the trainer's defaults"}
  echo "run: $gpus GPU(s), $label, curriculum $CURRICULUM"
  exec "$python" -m tools.launch --standalone --nproc_per_node="$gpus" train_gpt.py  # torchrun, ending in one line
fi
echo "run: no GPU; $config on the CPU, curriculum $CURRICULUM, ${MAX_WALLCLOCK_SECONDS}s of training"
exec "$python" train_gpt.py
