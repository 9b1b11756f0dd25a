"""Plant known bugs one at a time in a scratch copy of the project and report which the tests catch.

    .venv/bin/python tests/mutation_check.py              # every mutation (about 10 minutes on 2 CPU cores)
    .venv/bin/python tests/mutation_check.py --only dash  # the mutations whose name contains "dash"
    .venv/bin/python tests/mutation_check.py --list

Each mutation replaces exact source lines (checked to occur once) in a fresh copy of the repo and runs
the tests that guard that behaviour there (``PYTHONPATH`` points at the copy, so the mutated package
is the one imported, also by subprocesses the tests start). "killed" means those tests failed, as they
must; "survived" means a bug went unnoticed. Exit status 1 when any mutation survives. A small
hand-kept list rather than mutmut/cosmic-ray: each entry is a bug that matters for the results and is
named in an issue, and running only the tests that guard it keeps the whole check to minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".venv", ".git", "runs", "docs", "__pycache__", ".pytest_cache", ".ruff_cache")
LOOP, E2E, T = "tests/test_loop.py::", "tests/test_end_to_end.py::", "tests/"
STOP_RULE_TEST = T + "test_trainer.py::test_running_accuracy_is_recounted_and_the_stop_rule_uses_its_threshold"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (exact old text, new text)
    tests: tuple[str, ...]


def _m(name: str, file: str, old: str, new: str, *tests: str) -> Mutation:
    return Mutation(name, file, ((old, new),), tests)


MUTATIONS = [
    _m(
        "masked accuracy is a plain argmax",
        "warmstart_hf/metrics/evaluation.py",
        "    return masked.argmax(-1)",
        "    return logits.argmax(-1)",
        LOOP + "test_recounted_accuracies_equal_the_records",
    ),
    _m(
        "per-group accuracy over the whole test set",
        "warmstart_hf/metrics/evaluation.py",
        "[accuracy(test_pred[g], test_labels[g]) for g",
        "[accuracy(test_pred, test_labels) for g",
        LOOP + "test_recounted_accuracies_equal_the_records",
    ),
    _m(
        "early stopping keeps the last epoch",
        "warmstart_hf/loop.py",
        "load_best_model_at_end=True",
        "load_best_model_at_end=False",
        LOOP + "test_early_stopping_ends_the_phase_on_the_best_epoch",
    ),
    _m(
        "augmentation returns its input",
        "warmstart_hf/data/augment.py",
        "            images = transform(images)",
        "            images = images",
        T + "test_augment.py",
    ),
    _m(
        "stop rule ignores its threshold",
        "warmstart_hf/trainer.py",
        "if threshold is not None and accuracy >= threshold:",
        "if threshold is not None:",
        STOP_RULE_TEST,
    ),
    _m(
        "running accuracy counts errors",
        "warmstart_hf/trainer.py",
        "(outputs.logits.argmax(-1) == labels).sum()",
        "(outputs.logits.argmax(-1) != labels).sum()",
        STOP_RULE_TEST,
    ),
    _m(
        "warm starts from a fresh draw",
        "warmstart_hf/strategies/warm_cold.py",
        "        return PhaseStart(model=ctx.previous_model, carry_optimizer_state=self.carries_optimizer_state())",
        "        return PhaseStart(model=ctx.fresh_model(), carry_optimizer_state=self.carries_optimizer_state())",
        LOOP + "test_each_strategy_starts_each_phase_where_it_promises",
    ),
    _m(
        "cold reuses one seed every phase",
        "warmstart_hf/tasks/classification.py",
        'derive_seed(seed, "fresh", phase)',
        'derive_seed(seed, "fresh", 1)',
        LOOP + "test_each_strategy_starts_each_phase_where_it_promises",
    ),
    _m(
        "cold same forgets BatchNorm buffers",
        "warmstart_hf/strategies/warm_cold.py",
        "for name, tensor in model.state_dict().items():",
        "for name, tensor in model.named_parameters():",
        T + "test_strategies.py::test_cold_same_restores_theta0_including_batchnorm_buffers",
    ),
    _m(
        "resets reset nothing",
        "warmstart_hf/strategies/resets.py",
        "tensor.copy_(fresh[key].to(tensor.device, tensor.dtype))",
        "tensor.copy_(tensor)",
        LOOP + "test_each_strategy_starts_each_phase_where_it_promises",
    ),
    _m(
        "reset_last_k resets only the head",
        "warmstart_hf/strategies/resets.py",
        "return units[-k:] + [head_module_name(model)]",
        "return [head_module_name(model)]",
        LOOP + "test_each_strategy_starts_each_phase_where_it_promises",
    ),
    _m(
        "the loop drops a carried optimizer state",
        "warmstart_hf/loop.py",
        "    optimizer_state = carried_state if start.carry_optimizer_state else None",
        "    optimizer_state = None",
        LOOP + "test_each_strategy_starts_each_phase_where_it_promises",
    ),
    _m(
        "DASH sees the newest chunk first",
        "warmstart_hf/strategies/base.py",
        "        return iter_pixel_batches(self.train_dataset, batch_size)",
        "        newest_first = self.train_dataset.select(range(len(self.train_dataset))[::-1])\n"
        "        return iter_pixel_batches(newest_first, batch_size)",
        LOOP + "test_dash_estimates_on_all_seen_data_with_the_newest_chunk_last",
    ),
    _m(
        "DASH clamps at 0 instead of lam",
        "warmstart_hf/strategies/dash.py",
        "        return cos.clamp(min=lam, max=1.0).view(*cos.shape, *([1] * (weight.dim() - 2)))",
        "        return cos.clamp(min=0.0, max=1.0).view(*cos.shape, *([1] * (weight.dim() - 2)))",
        T + "test_interventions.py",
    ),
    _m(
        "gaussian S&P adds no noise",
        "warmstart_hf/strategies/shrink_perturb.py",
        "param.mul_(shrink).add_(draw.to(param.device, param.dtype), alpha=noise)",
        "param.mul_(shrink)",
        T + "test_interventions.py",
    ),
    _m(
        "fresh_init S&P ignores the fresh model",
        "warmstart_hf/strategies/shrink_perturb.py",
        "param.mul_(shrink).add_(fresh[name].to(param.device, param.dtype), alpha=perturb)",
        "param.mul_(shrink)",
        T + "test_interventions.py",
    ),
    _m(
        "interpolate_init swaps the weights",
        "warmstart_hf/strategies/shrink_perturb.py",
        "param.mul_(1 - c).add_(init_state[name].to(param.device, param.dtype), alpha=c)",
        "param.mul_(c).add_(init_state[name].to(param.device, param.dtype), alpha=1 - c)",
        T + "test_interventions.py",
    ),
    _m(
        "fresh_init skips the first phase by default",
        "warmstart_hf/config.py",
        "    sp_apply_before_first_phase: bool = field(\n        default=True,",
        "    sp_apply_before_first_phase: bool = field(\n        default=False,",
        T + "test_strategies.py",
    ),
    _m(
        "L2-init penalizes absolute distances",
        "warmstart_hf/strategies/regularizers.py",
        "term = (param - anchor).pow(2).sum()",
        "term = (param - anchor).abs().sum()",
        T + "test_interventions.py::test_l2_init_penalty_is_the_sum_of_squares_over_all_parameters",
    ),
    _m(
        "Hare & Tortoise resets after epochs 10, 20, ...",
        "warmstart_hf/strategies/hare_tortoise.py",
        "        finished = round(state.epoch or 0) - 1",
        "        finished = round(state.epoch or 0)",
        T + "test_interventions.py::test_hare_tortoise_ema_and_periodic_reset",
    ),
    Mutation(
        "the model invites the Trainer to rescale its loss",
        "warmstart_hf/models/classifier.py",
        (("    accepts_loss_kwargs = False", "    accepts_loss_kwargs = True"),),
        (T + "test_loss_scaling.py::test_a_plain_trainer_also_takes_the_loss_as_a_per_batch_mean",),
    ),
    _m(
        "the trainer trusts the model's loss kwargs",
        "warmstart_hf/trainer.py",
        "        self.model_accepts_loss_kwargs = False",
        "        self.model_accepts_loss_kwargs = True",
        T + "test_loss_scaling.py::test_gradient_accumulation_gives_the_update_of_the_full_batch",
        T + "test_loss_scaling.py::test_two_processes_give_the_update_of_one",
    ),
    _m(
        "gradients clipped at 1.0 by default",
        "warmstart_hf/config.py",
        '    "max_grad_norm": 0.0,',
        '    "max_grad_norm": 1.0,',
        T + "test_loss_scaling.py::test_gradients_are_not_clipped_unless_the_recipe_says_so",
    ),
    _m(
        "masked-logit training ignores the mask",
        "warmstart_hf/trainer.py",
        "            outputs.logits = mask_unseen_logits(outputs.logits, self.loss_classes)",
        "            pass",
        T + "test_trainer.py::test_masked_loss_trains_only_the_seen_classes",
    ),
    _m(
        "dormant units by spatial mean",
        "warmstart_hf/metrics/diagnostics.py",
        "per_entry = pooled if index == len(relus) - 1 else output",
        "per_entry = pooled",
        T + "test_diagnostics.py",
    ),
    _m(
        "diagnostic sample ignores its seed",
        "warmstart_hf/metrics/diagnostics.py",
        "np.random.default_rng(seed).choice",
        "np.random.default_rng(0).choice",
        LOOP + "test_the_diagnostic_sample_follows_its_seed",
    ),
    _m(
        "gradient probe uses the new chunk as old data",
        "warmstart_hf/tasks/classification.py",
        "        old = plan.seen_indices(phase - 1) if phase > 0 else []",
        "        old = plan.chunks[phase] if phase > 0 else []",
        LOOP + "test_gradient_probe_uses_the_old_chunks_and_the_new_one",
    ),
    _m(
        "the continued schedule restarts",
        "warmstart_hf/loop.py",
        'epoch_offset=sum(r["epochs"] for r in arm.results[:phase]) if continued else 0.0,',
        "epoch_offset=0.0,",
        LOOP + "test_continued_schedule_offsets_each_phase_by_the_epochs_before_it",
    ),
    _m(
        "phase_epochs ignored",
        "warmstart_hf/loop.py",
        '        extra["num_train_epochs"] = inc.phase_epochs[phase]',
        "        pass",
        E2E + "test_phase_epochs_give_each_phase_its_own_length",
    ),
    _m(
        "init_from ignored",
        "warmstart_hf/tasks/classification.py",
        "        if data.init_model is not None:",
        "        if False:",
        LOOP + "test_init_from_a_local_phase_directory_is_theta0",
    ),
    _m(
        "config.yaml loses its data section",
        "warmstart_hf/config.py",
        '            "data": dataclasses.asdict(self.data),\n            "model": dataclasses.asdict(self.model),\n'
        '            "incremental": dataclasses.asdict(self.incremental),\n            "strategy"',
        '            "data": {},\n            "model": dataclasses.asdict(self.model),\n'
        '            "incremental": dataclasses.asdict(self.incremental),\n            "strategy"',
        LOOP + "test_config_yaml_holds_every_section_and_no_token",
    ),
    _m(
        "the token is written to config.yaml",
        "warmstart_hf/config.py",
        ' and "token" not in f.name',
        "",
        LOOP + "test_config_yaml_holds_every_section_and_no_token",
    ),
    _m(
        "report gap sign flipped",
        "warmstart_hf/report/study.py",
        "return [100 * (value(mine[s]) - value(base[s])) for s",
        "return [100 * (value(base[s]) - value(mine[s])) for s",
        T + "test_sweep.py::test_tiny_sweep_is_paired_and_reported",
    ),
    _m(
        "a small significant loss reads 'no loss'",
        "warmstart_hf/report/statistics.py",
        "verdict = VERDICTS[4] if above else VERDICTS[5] if below else VERDICTS[0]",
        "verdict = VERDICTS[0]",
        T + "test_statistics.py",
    ),
    _m(
        "mixed optimizer policies pass silently",
        "warmstart_hf/strategies/registry.py",
        "    if len(set(policies.values())) < 2:",
        "    if True:",
        E2E + "test_mixed_optimizer_policies_warn_and_every_table_shows_each_arms_policy",
    ),
    _m(
        "incomplete checkpoints are trusted",
        "warmstart_hf/checkpoints.py",
        "        if is_complete(folder):\n            complete.append(folder)",
        "        if True:\n            complete.append(folder)",
        T + "test_reliability.py::test_incomplete_or_damaged_checkpoints_are_skipped_with_a_warning",
    ),
    _m(
        "a truncated phase model is taken as finished",
        "warmstart_hf/loop.py",
        "    while kept and not phase_files_readable(",
        "    while False and not phase_files_readable(",
        T + "test_reliability.py::test_a_truncated_phase_model_or_results_line_is_redone",
    ),
    _m(
        "a checkpoint at an epoch's last step is written before the epoch's record",
        "warmstart_hf/trainer.py",
        "        if control.should_save and (ends_epoch or ends_training):",
        "        if False:",
        T + "test_reliability.py::test_a_disk_that_cannot_be_written_stops_with_a_message_and_the_state_intact",
    ),
    _m(
        "no lock on the arm",
        "warmstart_hf/run_lock.py",
        "        lock.acquire()",
        "        pass",
        T + "test_reliability.py::test_a_second_process_on_a_running_arm_exits_2_and_a_killed_holder_does_not_block",
    ),
    _m(
        "ranks keep their own BatchNorm statistics",
        "warmstart_hf/trainer.py",
        "        broadcast_module(self.model)  # every rank",
        "        pass  # every rank",
        E2E + "test_two_processes_end_every_phase_with_identical_weights",
    ),
]
VIEWS = "tests/test_views.py::"
CROP_MUTATIONS = [
    _m(
        "crops: worker view crops the stored square",
        "warmstart_hf/data/pixels.py",
        '        out["pixel_values"] = [view(image) for image in batch["image"]]',
        '        out["pixel_values"] = [view(center_square(image, min(image.size))) for image in batch["image"]]',
        VIEWS + "test_worker_crop_is_made_from_the_full_image_bicubic",
        VIEWS + "test_worker_evaluation_view_is_torchvision_resize_then_centre_crop",
    ),
    _m(
        "crops: bilinear instead of bicubic",
        "warmstart_hf/data/sample_views.py",
        'INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}',
        'INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BILINEAR}',
        VIEWS + "test_worker_crop_is_made_from_the_full_image_bicubic",
        VIEWS + "test_worker_evaluation_view_is_torchvision_resize_then_centre_crop",
    ),
    _m(
        "crops: device path resamples bilinear whatever interpolation says",
        "warmstart_hf/data/augment.py",
        '    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="border", align_corners=False)',
        '    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)',
        VIEWS + "test_device_path_bicubic_resamples_as_torch_interpolate",
    ),
    _m(
        "crops: RandAugment skipped",
        "warmstart_hf/data/sample_views.py",
        "        steps.append(rand_augment(rand_augment_config, crop_size, mean, interpolation))",
        "        pass",
        VIEWS + "test_rand_augment_changes_the_views_only_when_on",
    ),
    _m(
        "crops: random erasing skipped",
        "warmstart_hf/data/augment.py",
        '    RandomErasing(probability, mode="pixel", max_count=1, device=images.device)(normalised)  # in place',
        "    pass",
        VIEWS + "test_random_erasing_erases_about_its_probability_of_images_and_nothing_when_off",
        VIEWS + "test_erasing_before_normalisation_is_the_references_erasing_on_the_normalised_image",
    ),
    _m(
        "crops: erased images clipped to the unit range",
        "warmstart_hf/data/augment.py",
        "    return unnormalize_pixels(normalised, mean, std)",
        "    return unnormalize_pixels(normalised, mean, std).clamp(0, 1)",
        VIEWS + "test_erasing_before_normalisation_is_the_references_erasing_on_the_normalised_image",
    ),
    _m(
        "crops: training loader reads the evaluation view",
        "warmstart_hf/trainer.py",
        "            self.train_dataset = self.train_rows(dataset)",
        "            self.train_dataset = dataset",
        VIEWS + "test_the_training_loader_reads_the_training_view_and_prediction_the_evaluation_view",
    ),
]
MUTATIONS += CROP_MUTATIONS

FT, MAE = T + "test_finetune.py::", T + "test_mae.py::"
MAE_INIT = MAE + "test_reference_initialisation_draws_the_patch_embedding_and_tokens_as_the_reference"
LR_RULE = T + "test_config.py::test_the_mae_learning_rate_rule_counts_batch_accumulation_and_processes"
LARS_STEP = MAE + "test_two_lars_steps_equal_the_reference_update_by_hand"
TEST_STRENGTH_MUTATIONS = [
    Mutation(
        "finetune: empty augmentation still crops and flips",
        "warmstart_hf/tasks/views.py",
        (
            (
                "    augment = build_augmentation(\n        inc.augmentation, rotation_degrees",
                '    names = inc.augmentation or ["random_resized_crop", "flip"]\n'
                "    augment = build_augmentation(\n        names, rotation_degrees",
            ),
            (
                '    if "random_resized_crop" in inc.augmentation:\n        return augment',
                '    if "random_resized_crop" in names:\n        return augment',
            ),
        ),
        (FT + "test_training_batches_are_the_evaluation_view_without_augmentation_and_differ_with_it",),
    ),
    _m(
        "config: LR rule ignores accumulation",
        "warmstart_hf/config.py",
        "        effective = tr.per_device_train_batch_size * tr.world_size * tr.gradient_accumulation_steps",
        "        effective = tr.per_device_train_batch_size * tr.world_size",
        LR_RULE,
    ),
    _m(
        "config: LR rule ignores world size",
        "warmstart_hf/config.py",
        "        effective = tr.per_device_train_batch_size * tr.world_size * tr.gradient_accumulation_steps",
        "        effective = tr.per_device_train_batch_size * tr.gradient_accumulation_steps",
        LR_RULE,
    ),
    _m(
        "mae: patch embedding keeps conv default init",
        "warmstart_hf/models/mae.py",
        "        nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))\n",
        "",
        MAE_INIT,
    ),
    _m(
        "mae: patch embedding xavier over the 4-D conv weight",
        "warmstart_hf/models/mae.py",
        "        nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))",
        "        nn.init.xavier_uniform_(conv.weight)",
        MAE_INIT,
    ),
    _m(
        "mae: class token not initialised",
        "warmstart_hf/models/mae.py",
        "        nn.init.normal_(model.vit.embeddings.cls_token, std=0.02)\n",
        "",
        MAE_INIT,
    ),
    _m(  # a transformers release whose table already has the reference's order: the project's swap undoes it
        "mae: sin-cos halves swapped",
        "warmstart_hf/models/mae.py",
        "from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding\n",
        "import transformers.models.vit_mae.modeling_vit_mae as _vit_mae\n\n"
        "_table = _vit_mae.build_2d_sinusoidal_position_embedding\n\n\n"
        "def build_2d_sinusoidal_position_embedding(*args, **kwargs):\n"
        "    values = _table(*args, **kwargs)\n"
        "    half = values.shape[-1] // 2\n"
        "    return torch.cat([values[..., half:], values[..., :half]], dim=-1)\n\n\n"
        "_vit_mae.build_2d_sinusoidal_position_embedding = build_2d_sinusoidal_position_embedding\n",
        MAE + "test_position_embeddings_are_the_reference_sin_cos_tables",
    ),
    _m(
        "mae: LARS without momentum",
        "warmstart_hf/models/probe.py",
        "    return Lars(groups, lr=lr, momentum=0.9, weight_decay=0.0)",
        "    return Lars(groups, lr=lr, momentum=0.0, weight_decay=0.0)",
        LARS_STEP,
    ),
    _m(
        "mae: LARS clips its trust ratio (LARC)",
        "warmstart_hf/models/probe.py",
        "    return Lars(groups, lr=lr, momentum=0.9, weight_decay=0.0)",
        "    return Lars(groups, lr=lr, momentum=0.9, weight_decay=0.0, trust_clip=True)",
        LARS_STEP,
    ),
]
MUTATIONS += TEST_STRENGTH_MUTATIONS

A = "tests/test_alignment.py::"
ALIGNMENT_MUTATIONS = [
    _m(
        "alignment: candidates only from the same phase",
        "warmstart_hf/report/alignment.py",
        "    return [align_phase(m, f, tolerance, moving[:index]) for index, (m, f) in enumerate(zip(moving, fixed))]",
        "    return [align_phase(m, f, tolerance, []) for index, (m, f) in enumerate(zip(moving, fixed))]",
        A + "test_the_candidates_span_earlier_phases_and_the_choice_names_its_phase_and_step",
    ),
    _m(
        "alignment: ties go to the later phase",
        "warmstart_hf/report/alignment.py",
        'abs(point["probe_loss"] - target), point.get("phase", 0), point["step"]',
        'abs(point["probe_loss"] - target), -point.get("phase", 0), point["step"]',
        A + "test_ties_go_to_the_earlier_phase_and_a_fresh_start_is_no_candidate",
    ),
    _m(
        "fig4: a flagged phase is not flagged in the study table",
        "warmstart_hf/report/pretraining.py",
        '"flagged": "" if p["within_tolerance"] else "flagged"',
        '"flagged": ""',
        A + "test_the_study_table_names_the_chosen_phase_and_flags_but_keeps_a_flagged_phase",
    ),
    _m(
        "fig5: flagged phases averaged",
        "warmstart_hf/downstream.py",
        '    return not r.get("flagged")',
        "    return True",
        A + "test_flagged_pairs_are_left_out_of_the_aligned_averages_and_listed",
    ),
    _m(
        "fig5: gap not paired by seed",
        "warmstart_hf/downstream.py",
        "        gaps = [warm[s] - cold[s] for s in seeds]",
        "        gaps = [warm[s] - cold[t] for s, t in zip(seeds, reversed(seeds))]",
        A + "test_the_warm_minus_cold_gap_is_paired_by_seed_with_its_interval_and_verdict",
    ),
    _m(
        "fig5: the plateau mark is not read from the probe's record",
        "warmstart_hf/downstream.py",
        '"plateaued": last.get("train_loss_plateaued"),',
        '"plateaued": None,',
        A + "test_probes_that_did_not_plateau_are_marked_and_unknown_is_not_failure",
    ),
    _m(
        "fig5: an unknown plateau mark counts as not plateaued",
        "warmstart_hf/downstream.py",
        '            if r["recipe"] == recipe and r.get("plateaued") is not None:',
        '            if r["recipe"] == recipe:',
        A + "test_probes_that_did_not_plateau_are_marked_and_unknown_is_not_failure",
    ),
]
MUTATIONS += ALIGNMENT_MUTATIONS


R = "tests/test_recipes.py::"
CLAIMS = R + "test_header_claims_match_the_values"
PROBE_HEAD = R + "test_probe_recipe_trains_its_head"
RECIPE_MUTATIONS = [
    _m(
        "recipes: probe LR back to MAE's rule at batch 256",
        "recipes/mae/probe_pets.yaml",
        "learning_rate: 6.4  # MAE's probe LR at its batch 16,384, kept at batch 256 (header)",
        "base_learning_rate: 0.1",
        CLAIMS,
        PROBE_HEAD,
    ),
    _m(
        "recipes: the probe keeps its last partial batch",
        "recipes/mae/probe_pets.yaml",
        "dataloader_drop_last: true  # as MAE's probe loader",
        "dataloader_drop_last: false",
        CLAIMS,
        PROBE_HEAD,
    ),
    _m(
        "recipes: ResNet finetuning milestones at He et al.'s 50/75",
        "recipes/finetune/pets.yaml",
        "lr_milestones: [20, 60]  # the study's from-scratch schedule; the paper states none for finetuning",
        "lr_milestones: [50, 75]",
        CLAIMS,
    ),
    _m(
        "recipes: the ImageNet command launches the config's 4 processes",
        "recipes/mae/imagenet_pretrain.yaml",
        "multi_gpu.yaml --num_processes 8 scripts",
        "multi_gpu.yaml scripts",
        CLAIMS,
    ),
    _m(
        "probe: plateau judged on the run's last steps, not on its high-LR phase",
        "warmstart_hf/metrics/convergence.py",
        '    high = [e for e in logs if peak > 0 and e["learning_rate"] >= HIGH_LR * peak]',
        "    high = logs",
        R + "test_a_probe_at_the_rule_s_small_learning_rate_is_reported_as_not_plateaued",
    ),
    _m(
        "probe: crop_size not checked against the encoder",
        "warmstart_hf/tasks/linear_probe.py",
        "        if self.config.incremental.crop_size not in (None, crop):",
        "        if False:",
        R + "test_a_probe_whose_crop_size_is_not_the_encoder_s_is_refused",
    ),
]
MUTATIONS += RECIPE_MUTATIONS

RESUME_MUTATIONS = [
    _m(
        "resume: a checkpoint saved under other key names loads non-strictly",
        "warmstart_hf/trainer.py",
        "            if set(saved.keys()) == set(target.state_dict()):",
        "            if True:",
        T + "test_mae.py::test_an_mae_phase_resumed_mid_epoch_equals_an_uninterrupted_one",
    ),
    _m(
        "resume: a loaded model trains what it froze",
        "warmstart_hf/models/frozen.py",
        "        model.freeze()\n",
        "        pass\n",
        T + "test_mae.py::test_loaded_models_keep_their_frozen_parameters_frozen",
    ),
]
MUTATIONS += RESUME_MUTATIONS

BENCHMARK_MUTATIONS = [
    _m(
        "benchmark: a project run against the plain run before it only",
        "warmstart_hf/benchmark.py",
        "    plain = (before.images_per_second + after.images_per_second) / 2\n",
        "    plain = before.images_per_second\n",
        T + "test_benchmark.py::test_benchmark_interleaves_the_paths_and_reports_every_field",
    ),
    _m(
        "benchmark: an interval below 95% reported",
        "warmstart_hf/benchmark.py",
        "    interval = quantile_test(ratios, q=median, p=0.5).confidence_interval(confidence)\n",
        "    interval = quantile_test(ratios, q=median, p=0.5).confidence_interval(confidence - 0.1)\n",
        T + "test_benchmark.py::test_ratio_interval_is_the_distribution_free_one_for_the_median",
    ),
    _m(
        "benchmark: index loaders keep the recipe's workers",
        "warmstart_hf/trainer.py",
        " = 0, False, None\n",
        " = saved\n",
        T + "test_trainer.py::test_index_loaders_need_no_worker_processes",
    ),
]
MUTATIONS += BENCHMARK_MUTATIONS

HELP = T + "test_config.py::test_help_is_grouped_lists_the_registries_and_hides_the_unused_training_fields"
TRACKING = T + "test_tracking.py::test_tensorboard_is_one_run_per_arm_on_one_step_axis_that_a_resume_continues"
TRACKING_MUTATIONS = [
    _m(
        "help: strategies not listed from their registry",
        "warmstart_hf/strategies/registry.py",
        'REGISTERED_NAMES["strategies"] = STRATEGIES  # --help lists them\n',
        "",
        HELP,
    ),
    _m(
        "help: the unused TrainingArguments fields shown",
        "warmstart_hf/config.py",
        '        if not full and (_FIELD_GROUPS.get(action.dest) is None or name.startswith("no_")):',
        '        if not full and name.startswith("no_"):',
        HELP,
    ),
    _m(
        "tensorboard: each phase's steps restart at 0",
        "warmstart_hf/loop.py",
        '        callbacks.append(arm.tracker.start_phase(phase, sum(r["steps"] for r in arm.results[:phase])))',
        "        callbacks.append(arm.tracker.start_phase(phase, 0))",
        TRACKING,
    ),
    _m(
        "tensorboard: a resume keeps what the interrupted process logged past its checkpoint",
        "warmstart_hf/tracking.py",
        "purge_step=self.offset + phase_step + 1)",
        "purge_step=None)",
        TRACKING,
    ),
]
MUTATIONS += TRACKING_MUTATIONS

HX = "tests/test_hub_export.py::"
EXPORT_MUTATIONS = [
    _m(
        "export: the pushed statistics are not the model's",
        "warmstart_hf/models/export.py",
        '        "mean": list(config["image_mean"]),',
        '        "mean": [0.5] * channels,',
        HX + "test_pushed_timm_classifiers_load_with_plain_transformers_and_timm",
    ),
    _m(
        "export: num_classes in model_args (TimmWrapper passes it twice)",
        "warmstart_hf/models/export.py",
        '    model_args = {**(config.get("model_kwargs") or {}), "in_chans": channels}',
        '    model_args = {**(config.get("model_kwargs") or {}), "in_chans": channels, "num_classes": num_classes}',
        HX + "test_export_keeps_the_run_format_and_round_trips",
    ),
    _m(
        "export: resnet18_cifar pushed without its code",
        "warmstart_hf/models/export.py",
        'REMOTE_CODE = {"resnet18_cifar": ("resnet_cifar.py", "timm_remote.py")}',
        "REMOTE_CODE = {}",
        HX + "test_export_keeps_the_run_format_and_round_trips",
    ),
]
MUTATIONS += EXPORT_MUTATIONS

# Installed like a library: bundled recipe names, the wheel's contents, a failed push that says so.
PACKAGING = T + "test_packaging.py::"
PACKAGING_MUTATIONS = [
    _m(
        "packaging: a failed push exits 0",
        "warmstart_hf/cli.py",
        "    return 1 if problems else 0",
        "    return 0",
        PACKAGING + "test_a_failed_push_fails_the_training_command_and_push_finishes_it",
    ),
    _m(
        "packaging: a push that fails off the Hub leaves no hub.json",
        "warmstart_hf/hub.py",
        "        _write_state(arm_dir, state, records)  # whatever failed, hub.json says what is pending and why",
        "        pass",
        PACKAGING + "test_a_failed_push_fails_the_training_command_and_push_finishes_it",
    ),
    _m(
        "packaging: names are not looked up in the bundled recipes",
        "warmstart_hf/bundled_recipes.py",
        "    directory = recipes_dir()\n    if directory is None or path.is_absolute():",
        "    directory = None\n    if directory is None or path.is_absolute():",
        PACKAGING + "test_bundled_names_resolve_from_any_directory",
    ),
    _m(
        "packaging: the wheel ships no recipes",
        "setup.py",
        "        if self.editable_mode:\n            return\n        for target",
        "        return\n        for target",
        PACKAGING + "test_the_wheel_trains_a_bundled_recipe_pushes_and_reloads_outside_the_checkout",
    ),
]
MUTATIONS += PACKAGING_MUTATIONS

H = T + "test_hygiene.py::"
HYGIENE_MUTATIONS = [
    _m(
        "hygiene: atomic writes' temporaries created 0600 (mkstemp's mode)",
        "warmstart_hf/io.py",
        "lambda name: os.open(name, flags, 0o666))",
        "lambda name: os.open(name, flags, 0o600))",
        H + "test_every_file_and_directory_of_a_run_and_its_reports_has_the_umasks_mode",
    ),
    _m(
        "hygiene: a phase's safetensors files keep safetensors' 0600",
        "warmstart_hf/loop.py",
        '    give_ordinary_modes(phase_dir.glob("*.safetensors"))',
        "    pass",
        H + "test_every_file_and_directory_of_a_run_and_its_reports_has_the_umasks_mode",
    ),
    Mutation(
        "hygiene: the settings compared only once the arms are locked",
        "warmstart_hf/loop.py",
        (
            ("    _check_run_dir(config)\n    arms = ", "    arms = "),
            (
                "_collector_frozen():\n        _run_arms(",
                "_collector_frozen():\n        _check_run_dir(config)\n        _run_arms(",
            ),
        ),
        (H + "test_refused_commands_leave_a_finished_run_directory_untouched",),
    ),
    _m(
        "hygiene: the fingerprint holds a fixed list of training fields",
        "warmstart_hf/config.py",
        'if f.init and not f.name.startswith("_") and f.name not in FINGERPRINT_EXCLUDED["training"]',
        'if f.name in ("learning_rate", "optim", "weight_decay", "num_train_epochs")',
        H + "test_changing_any_field_but_the_excluded_ones_changes_the_fingerprint",
    ),
    _m(
        "hygiene: an older directory's missing fields compared with the defaults, not its saved recipe",
        "warmstart_hf/loop.py",
        "            for source in (previous, saved):",
        "            for source in (previous,):",
        H + "test_a_directory_of_the_previous_release_is_checked_against_its_saved_recipe",
    ),
    _m(
        "hygiene: the arm lock does not name its holder",
        "warmstart_hf/run_lock.py",
        "    lock = FileLock(path, blocking=False, on_acquired=_write_holder_note)",
        "    lock = FileLock(path, blocking=False)",
        H + "test_a_second_holder_of_an_arm_is_refused_with_the_holder_named",
    ),
    _m(
        "hygiene: a command refused for a busy arm keeps the arm directories it created",
        "warmstart_hf/run_lock.py",
        "        for arm_dir in (d for d in locked if d in new_dirs):",
        "        for arm_dir in ():",
        H + "test_a_command_refused_for_a_busy_arm_leaves_no_new_arm_behind",
    ),
]
MUTATIONS += HYGIENE_MUTATIONS

FIG = "tests/test_figures.py::"
FIGURE_MUTATIONS = [
    _m(
        "figures: phases ticked 1-based",
        "warmstart_hf/report/style.py",
        "    ax.set_xticks(list(phases), [str(p) for p in phases])",
        "    ax.set_xticks(list(phases), [str(p + 1) for p in phases])",
        FIG + "test_fig1_names_phases_from_0_keeps_intervals_within_100_and_its_legend_and_titles_clear",
    ),
    _m(
        "figures: the dormant axis left to autoscaling",
        "warmstart_hf/report/summary.py",
        "        ax.set_ylim(max(low, bounds[0]), top)",
        "        ax.set_ylim(low, top)",
        FIG + "test_the_run_summary_keeps_fractions_at_or_above_0_and_names_phases_from_0",
    ),
    _m(
        "figures: Fig. 2 has a legend with nothing to tell apart",
        "warmstart_hf/report/study.py",
        '        label = label if any(c["standard"] for c in chosen) else None  # no legend without a standard row\n',
        "",
        FIG + "test_fig2_names_only_the_markers_it_draws",
    ),
]
MUTATIONS += FIGURE_MUTATIONS

REDO_TEST = T + "test_redo.py::test_one_recycle_replaces_exactly_the_two_dormant_units"
REDO_MUTATIONS = [
    _m(
        "redo: the score is not normalized by the layer's mean",
        "warmstart_hf/strategies/redo.py",
        "    return activity / (activity.mean() + EPSILON)",
        "    return activity",
        REDO_TEST,
    ),
    _m(
        "redo: the outgoing weights of a recycled unit are kept",
        "warmstart_hf/strategies/redo.py",
        "    units.conv_out.weight[:, mask] = 0\n",
        "    pass\n",
        REDO_TEST,
    ),
]
MUTATIONS += REDO_MUTATIONS

CBP_MUTATIONS = [
    _m(
        "cbp: units become replaceable at the maturity age, not after it",
        "warmstart_hf/strategies/cbp.py",
        "            eligible = torch.where(layer.ages > self.maturity)[0]",
        "            eligible = torch.where(layer.ages >= self.maturity)[0]",
        T + "test_cbp.py::test_one_step_replaces_the_units_the_reference_formula_picks",
    ),
    _m(
        "cbp: a resumed phase restarts its unit ages from the previous phase",
        "warmstart_hf/strategies/cbp.py",
        "    if ctx.resume_checkpoint and (Path(ctx.resume_checkpoint) / CBP_FILE).exists():\n        return",
        "    if False:\n        return",
        T + "test_cbp.py::test_cbp_run_replaces_units_and_resumes_exactly",
    ),
]
MUTATIONS += CBP_MUTATIONS

# AID (activation by interval-wise dropout): the interval-wise keep probabilities, and the rebuild on load.
AID_MUTATIONS = [
    _m(
        "AID keeps negative pre-activations with p instead of 1 - p",
        "warmstart_hf/models/aid.py",
        "keep = torch.bernoulli(torch.where(x >= 0, self.p, 1.0 - self.p), generator=generator)",
        "keep = torch.bernoulli(torch.where(x >= 0, self.p, self.p), generator=generator)",
        T + "test_aid.py::test_aid_training_masks_keep_positives_with_p_and_negatives_with_1_minus_p",
    ),
    _m(
        "a saved AID model loads back with ReLUs",
        "warmstart_hf/models/classifier.py",
        '        if getattr(config, "aid_p", None) is not None:',
        "        if False:",
        T + "test_aid.py::test_every_relu_becomes_aid_and_a_saved_model_rebuilds_them",
    ),
    _m(
        "an AID phase resumes with the phase's fresh masks",
        "warmstart_hf/strategies/aid.py",
        '        masks.load(load_file(str(saved))["state"])',
        "        pass",
        T + "test_aid.py::test_an_aid_run_resumed_mid_phase_equals_an_uninterrupted_one",
    ),
]
MUTATIONS += AID_MUTATIONS

PHASES = T + "test_phases.py::"
REPLAY_MUTATIONS = [
    _m(
        "replay ignores the seed",
        "warmstart_hf/data/phases.py",
        "    picked = np.random.default_rng(seed).choice(len(earlier), size=count, replace=False)",
        "    picked = np.random.default_rng(0).choice(len(earlier), size=count, replace=False)",
        PHASES + "test_replay_sample_is_seeded_and_its_ends_are_identity_and_empty",
    ),
    _m(
        "replay takes the newest earlier examples instead of a seeded sample",
        "warmstart_hf/data/phases.py",
        "    return [earlier[i] for i in np.sort(picked)]",
        "    return list(earlier[len(earlier) - count :])",
        PHASES + "test_a_replay_plan_trains_each_phase_on_a_seeded_sample_of_the_earlier_chunks_then_the_new_one",
        PHASES + "test_replay_sample_is_seeded_and_its_ends_are_identity_and_empty",
    ),
    _m(
        "replay count truncates instead of rounding",
        "warmstart_hf/data/phases.py",
        "    count = round(fraction * len(earlier))",
        "    count = int(fraction * len(earlier))",
        PHASES + "test_replay_sample_takes_exactly_round_f_n_in_original_order",
    ),
    _m(
        "with replay the gradient probe's old data is only the replayed sample",
        "warmstart_hf/tasks/classification.py",
        "        old = plan.seen_indices(phase - 1) if phase > 0 else []",
        "        old = plan.train_indices(phase - 1) if phase > 0 else []",
        LOOP + "test_a_replay_run_trains_each_phase_on_the_replayed_sample_and_the_new_chunk",
    ),
]
MUTATIONS += REPLAY_MUTATIONS

# A causal_lm run on the Hub and its distributed guarantees (tests/test_lm_hub.py, tests/test_lm_scaling.py).
LM_HUB = T + "test_lm_hub.py::test_causal_lm_phases_load_from_the_hub_with_the_recorded_loss_and_tokenizer"
LM_HUB_MUTATIONS = [
    _m(
        "lm-hub: the phase model is saved without the tokenizer",
        "warmstart_hf/tasks/causal_lm.py",
        '            "processing_class": data.tokenizer,  # saved with every checkpoint and phase model\n',
        "",
        LM_HUB,
    ),
    _m(
        "lm-hub: a phase is pushed without its tokenizer",
        "warmstart_hf/models/export.py",
        '    return {**files, **tokenizer_files(folder, out_dir / "tokenizer", tokenizer_dir)}',
        "    return files",
        LM_HUB,
    ),
    _m(
        "lm-hub: the held-out loss averages per batch instead of summing",
        "warmstart_hf/models/causal_lm.py",
        'targets, reduction="sum")',
        'targets, reduction="mean")',
        LM_HUB,
    ),
    _m(
        "lm-hub: a GPT-2 decoder keeps its dropout",
        "warmstart_hf/models/causal_lm.py",
        "            resid_pdrop=0.0,\n            embd_pdrop=0.0,\n            attn_pdrop=0.0,\n",
        "",
        T + "test_lm_scaling.py::test_gradient_accumulation_gives_the_update_of_the_full_batch",
    ),
    _m(
        "lm-hub: the downstream evaluation leaves the pushed cards as they were",
        "warmstart_hf/downstream.py",
        "    push_downstream_cards(run_dir, rows)",
        "    pass",
        LM_HUB,
    ),
    _m(
        "lm-hub: a Hub `pretrained` is fetched without its tokenizer",
        "warmstart_hf/models/pretrained.py",
        'allow_patterns=["config.json", WEIGHTS_FILE, *TOKENIZER_FILES]',
        'allow_patterns=["config.json", WEIGHTS_FILE]',
        LM_HUB,
    ),
]
MUTATIONS += LM_HUB_MUTATIONS

# Task causal_lm (tests/test_causal_lm.py).
LM = T + "test_causal_lm.py::"
LM_MUTATIONS = [
    _m(
        "lm: leaderboard rows from a run directory leave out the held-out loss",
        "warmstart_hf/report/leaderboard.py",
        "language = [{k: r[k] for k in LANGUAGE_FIELDS if k in r} for r in records]",
        "language = [{} for r in records]",
        LM + "test_the_study_report_and_leaderboard_give_language_runs_perplexity_and_the_paired_loss_gap",
    ),
    _m(
        "lm: the study report treats language runs as accuracy runs",
        "warmstart_hf/report/study.py",
        'LOSS_TASKS = ("mae_pretrain", "causal_lm")',
        'LOSS_TASKS = ("mae_pretrain",)',
        LM + "test_the_study_report_and_leaderboard_give_language_runs_perplexity_and_the_paired_loss_gap",
    ),
    _m(
        "lm: the study report's loss gap is cold minus the strategy",
        "warmstart_hf/report/language.py",
        'done[(strategy, s)][-1]["validation_loss"] - done[("cold", s)][-1]["validation_loss"]',
        'done[("cold", s)][-1]["validation_loss"] - done[(strategy, s)][-1]["validation_loss"]',
        LM + "test_the_study_report_and_leaderboard_give_language_runs_perplexity_and_the_paired_loss_gap",
    ),
    _m(
        "lm: a chunk's blocks keep the tail shorter than a block",
        "warmstart_hf/data/text_blocks.py",
        "    usable = (len(joined) // block_size) * block_size",
        "    usable = len(joined)",
        LM + "test_packing_equals_run_clm_group_texts_by_hand",
    ),
    _m(
        "lm: replay keeps the newest earlier blocks",
        "warmstart_hf/tasks/causal_lm.py",
        "        kept = replay_sample(range(len(earlier)), self.config.incremental.replay_fraction, seed)",
        "        kept = list(range(len(earlier) - round(self.config.incremental.replay_fraction * len(earlier)), "
        "len(earlier)))",
        LM + "test_replay_selects_exactly_the_stated_share_of_earlier_blocks",
    ),
    _m(
        "lm: cold draws theta0 again instead of a new draw per phase",
        "warmstart_hf/tasks/causal_lm.py",
        'derive_seed(seed, "fresh", phase))',
        'derive_seed(seed, "init"))',
        LM + "test_warm_starts_from_the_last_phase_and_cold_from_its_seeded_draw",
    ),
    _m(
        "lm: init/ is saved without the run's tokenizer",
        "warmstart_hf/tasks/causal_lm.py",
        "        self.tokenizer.save_pretrained(directory)\n",
        "",
        LM + "test_the_tokenizer_is_fixed_across_phases_and_saved_with_every_model",
    ),
    _m(
        "lm: the domain scenario's held-out loss covers domains not seen yet",
        "warmstart_hf/tasks/causal_lm.py",
        'seen = range(len(sums)) if data.plan.scenario == "data" else range(phase + 1)',
        "seen = range(len(sums))",
        LM + "test_domain_scenario_held_out_loss_covers_the_domains_seen_so_far",
    ),
    _m(
        "lm: under warmup-stable-decay warm continues from the decayed end",
        "warmstart_hf/loop.py",
        "    return arm.task.load_model(phase_dir / PreDecaySnapshot.DIRECTORY)",
        "    return model",
        LM + "test_wsd_warm_continues_from_the_step_before_the_decay",
    ),
]
MUTATIONS += LM_MUTATIONS

LM_DOWN = T + "test_lm_downstream.py::"
LM_DOWNSTREAM_MUTATIONS = [
    _m(
        "the scrambled passages shuffle a word's first and last letters too",
        "warmstart_hf/data/text_sources.py",
        '        return w[0] + "".join(rng.permutation(list(w[1:-1]))) + w[-1]',
        '        return "".join(rng.permutation(list(w)))',
        LM_DOWN + "test_scrambled_passages_keep_their_letters_and_are_labelled_by_whether_they_changed",
    ),
    _m(
        "the language-model probe's pooling averages the padding too",
        "warmstart_hf/models/lm_probe.py",
        "    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)",
        "    return hidden.mean(dim=1)",
        LM_DOWN + "test_probe_features_are_the_hidden_states_averaged_over_the_real_tokens",
    ),
    _m(
        "the language-model probe leaves the decoder trainable",
        "warmstart_hf/models/lm_probe.py",
        "        self.decoder.requires_grad_(False)",
        "        self.decoder.requires_grad_(True)",
        LM_DOWN + "test_probe_features_are_the_hidden_states_averaged_over_the_real_tokens",
    ),
    _m(
        "the language-model probe's decoder is not the checkpoint's (a random draw)",
        "warmstart_hf/tasks/text_classification.py",
        "model.decoder.load_state_dict(",
        "(lambda weights: None)(",
        LM_DOWN + "test_probe_features_are_the_hidden_states_averaged_over_the_real_tokens",
    ),
    _m(
        "the genre passages' training split holds the test plays too",
        "warmstart_hf/data/text_sources.py",
        '{"train": _passages(split(False), genres)',
        '{"train": _passages(plays, genres)',
        LM_DOWN + "test_passages_split_by_play_and_are_labelled_with_their_play_s_genre",
    ),
]
MUTATIONS += LM_DOWNSTREAM_MUTATIONS

LM_BENCHMARK_MUTATIONS = [
    _m(
        "lm benchmark: a language model's throughput counted in blocks, not tokens",
        "warmstart_hf/tasks/causal_lm.py",
        '        return "tokens", self.config.data.block_size\n',
        '        return "tokens", 1\n',
        T + "test_benchmark.py::test_a_language_model_is_benchmarked_in_tokens_per_second",
    ),
    _m(
        "lm benchmark: the plain loop never steps the recipe's LR schedule",
        "warmstart_hf/benchmark.py",
        "    schedule.step()\n",
        "",
        T + "test_benchmark.py::test_the_plain_loop_steps_the_recipe_s_learning_rate_schedule",
    ),
]
MUTATIONS += LM_BENCHMARK_MUTATIONS


def run_mutation(mutation: Mutation, python: str, timeout: int) -> tuple[str, float, str]:
    """Apply one mutation in a scratch copy, run its tests there; returns (outcome, seconds, tail)."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        root = Path(scratch) / "repo"
        shutil.copytree(REPO, root, ignore=IGNORE)
        path = root / mutation.file
        text = path.read_text()
        for old, new in mutation.edits:
            if text.count(old) != 1:
                return "stale (the source no longer has this line once)", 0.0, old
            text = text.replace(old, new)
        path.write_text(text)
        env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        started = time.perf_counter()
        command = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests]
        try:
            proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed (timeout)", time.perf_counter() - started, ""
        seconds = time.perf_counter() - started
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        if proc.returncode == 0:
            return "SURVIVED", seconds, " ".join(tail)
        if proc.returncode in (4, 5):  # usage error / no tests collected: the check itself is broken
            return "error (tests not found)", seconds, " ".join(tail)
        return "killed", seconds, " ".join(tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutation")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only in m.name]
    if args.list:
        print("\n".join(f"{m.name}  ({m.file}; {', '.join(m.tests)})" for m in chosen))
        return 0
    rows = []
    print("| mutation | file | outcome | seconds |\n|---|---|---|---|", flush=True)
    for mutation in chosen:
        outcome, seconds, tail = run_mutation(mutation, sys.executable, args.timeout)
        rows.append({"mutation": mutation.name, "outcome": outcome, "seconds": round(seconds, 1), "tail": tail})
        print(f"| {mutation.name} | `{mutation.file}` | {outcome} | {seconds:.0f} |", flush=True)
    killed = sum(r["outcome"].startswith("killed") for r in rows)
    print(f"\n{killed} of {len(rows)} mutations killed")
    print(json.dumps({"killed": killed, "total": len(rows), "rows": rows}))
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
