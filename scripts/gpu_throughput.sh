#!/usr/bin/env bash
# The GPU throughput figures in one prepared run (estimated at about 12 minutes on one H200; never run
# yet), offline: every benchmark trains on synthetic images of the real dataset's shape (throughput
# does not depend on the pixels). The two ratio goals get interleaved pairs (6 pairs: a 95% interval);
# the overhead, memory and 224-px figures one pair each.
#   bash scripts/gpu_throughput.sh OUT_DIR             # on a CUDA machine with the project installed
#   DEVICE=cpu SMOKE=1 bash scripts/gpu_throughput.sh /tmp/smoke   # the same commands, tiny, on a CPU
# Each benchmark appends its table to OUT_DIR/throughput.md and its JSON line to throughput.jsonl
# (scripts/benchmark.py: images/s of the project's path and of a plain loop, interleaved, overhead by
# part, peak memory per phase, host synchronisations per step). On a machine without `datasets`, carry wheels
# (`make gpu-wheels`, then see docs/performance.md).
set -euo pipefail
out=${1:?usage: gpu_throughput.sh OUT_DIR}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
precision=(--bf16 true)
[ "$device" = cpu ] && precision=()
if [ "${SMOKE:-0}" = 1 ]; then  # every command, at a size a CPU runs in seconds
  cifar=synthetic:10:32:400:100 pets=synthetic:5:64:120:40 imagenet=synthetic:5:64:80:20
  long_epochs=2 epochs=1 extra=(--model_width 0.125 --per_device_train_batch_size 32)
  vit=(--mae_hidden_size 64 --mae_layers 2 --mae_heads 4 --mae_decoder_hidden_size 32 --mae_decoder_layers 1
       --mae_decoder_heads 4 --crop_size 32 --image_size 64 --patch_size 8 --probe_examples 16)
  tune=(--image_size 64 --crop_size 48) views_images=64 ratio_pairs=(--pairs 1 --min_seconds 0.5)
  one_pair=(--pairs 1 --min_seconds 0.5) fast_pairs=(--pairs 1 --min_seconds 0.5)
else
  cifar=synthetic:100:32:20000:2000 pets=synthetic:37:256:3000:500 imagenet=synthetic:100:224:4000:500
  long_epochs=100 epochs=3 extra=() vit=() tune=() views_images=4096 ratio_pairs=(--pairs 6)
  one_pair=(--pairs 1) fast_pairs=(--pairs 3)  # each fast-path run compiles anew: 3 pairs
fi
synthetic=(--image_column image --label_column label --train_split train --test_split test)

bench() {
  echo "== $*" | tee -a "$out/throughput.md"
  "$python" scripts/benchmark.py "$@" --device "$device" "${precision[@]}" "${synthetic[@]}" > "$out/last.txt" 2>"$out/last.err" \
    || { tail -20 "$out/last.err" | tee -a "$out/throughput.md"; return 0; }  # one failure must not lose the rest
  sed -n '/^recipe /,$p' "$out/last.txt" | grep -v '^{' >> "$out/throughput.md"  # the benchmark's table only
  tail -1 "$out/last.txt" >> "$out/throughput.jsonl"
}

# 1. The default path against an eager plain loop, at the CIFAR-100 protocol (2 phases of 10,000 / 20,000).
bench recipes/cifar100.yaml --dataset "$cifar" --num_phases 2 --num_train_epochs "$epochs" "${extra[@]}" \
  "${ratio_pairs[@]}"
# 2. The fast path against a CUDA-graph plain loop (torch.compile reduce-overhead, full batches).
bench recipes/cifar100.yaml --dataset "$cifar" --num_phases 2 --num_train_epochs "$epochs" "${extra[@]}" \
  --channels_last true --fused_optimizer true --torch_compile true --torch_compile_mode reduce-overhead \
  --dataloader_drop_last true --plain_compile reduce-overhead "${fast_pairs[@]}"
# 3. The phase overhead of one 100-epoch phase at the protocol (5,000 images: one chunk of 10).
bench recipes/cifar100.yaml --dataset "$cifar" --max_train_examples 5000 --num_phases 1 \
  --num_train_epochs "$long_epochs" "${extra[@]}" "${one_pair[@]}"
# 4. Finetuning a ResNet-18 at 224 px (random weights in timm's layout: nothing is downloaded).
if ! "$python" -c "import timm, sys; timm.models._hub.save_for_hf(timm.create_model('resnet18'), sys.argv[1], safe_serialization=True)" "$out/resnet18" 2>>"$out/last.err"; then
  echo "could not write a timm ResNet-18 folder (see last.err): finetuning not measured" | tee -a "$out/throughput.md"
fi
bench recipes/finetune/pets.yaml --dataset "$pets" --pretrained "$out/resnet18" --num_phases 2 \
  --num_train_epochs "$epochs" "${tune[@]}" "${one_pair[@]}"
# 5. MAE pretraining (ViT-B/16 at 224 px, the probe loss every 100 steps).
bench recipes/mae/imagenet_pretrain.yaml --dataset "$imagenet" --num_phases 2 --num_train_epochs "$epochs" \
  --per_device_train_batch_size 128 --gradient_accumulation_steps 1 --probe_examples 256 --probe_every_steps 100 \
  --save_strategy epoch "${vit[@]}" "${one_pair[@]}"
# 6. The same on the on-device path (224-px squares decoded once, batched crops on the GPU): the recipe's
#    worker path (5.) against it.
bench recipes/mae/imagenet_pretrain.yaml --dataset "$imagenet" --num_phases 2 --num_train_epochs "$epochs" \
  --per_device_train_batch_size 128 --gradient_accumulation_steps 1 --probe_examples 256 --probe_every_steps 100 \
  --save_strategy epoch --views device --decode eager --resize_mode center_square "${vit[@]}" "${one_pair[@]}"
# 7. The data path alone on ImageNet-sized JPEGs (500x375): the worker path with 8 workers vs the device path.
echo "== benchmark_views.py --workers 8 --images $views_images" | tee -a "$out/throughput.md"
"$python" scripts/benchmark_views.py --workers 8 --device "$device" --images "$views_images" 2>>"$out/last.err" \
  | tee "$out/last.txt" | grep '^|' >> "$out/throughput.md" || echo "benchmark_views.py failed" >> "$out/throughput.md"
tail -1 "$out/last.txt" >> "$out/throughput.jsonl"
echo "done: $out/throughput.md"
