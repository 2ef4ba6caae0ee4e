"""trainer/memory.py: the parameter count against the real model, the floor of a run's memory
against a limit, every shape (the run's, each phase's) checked, and an allocation that fails
mid-run named in one line."""
from __future__ import annotations

import resource
import subprocess
import sys

import pytest
import torch

import train_gpt as tg
from tests.conftest import trainer_env
from trainer.memory import GiB, LOGITS_LIMIT, memory_problems, parameter_count, state_bytes, usable_bytes


@pytest.mark.parametrize("overrides", [
    {}, dict(TIE_EMBEDDINGS="0"), dict(BIGRAM_VOCAB_SIZE="0"), dict(NUM_LAYERS="5", NUM_KV_HEADS="1", MLP_MULT="3"),
    dict(MODEL_DIM="96", NUM_HEADS="6", NUM_KV_HEADS="3", BIGRAM_DIM="32", VOCAB_SIZE="2048")])
def test_the_parameter_count_is_the_model_s(dataset, tmp_path, overrides):
    s = tg.parse_settings(trainer_env(dataset, tmp_path, **overrides))[0]
    model = tg.GPT(s)
    assert parameter_count(s) == sum(p.numel() for p in model.parameters())


def test_the_model_and_each_shape_are_held_against_the_limit(dataset, tmp_path):
    s = tg.parse_settings(trainer_env(dataset, tmp_path))[0]
    run = [("the run", 64, 32)]
    assert memory_problems(s, run, (64 * GiB, "plenty")) == []
    assert memory_problems(s, run, None) == []  # unknown: nothing refused
    tight = memory_problems(s, run, (state_bytes(s) // 2, "ulimit -v 1"))
    assert len(tight) == 1 and "weights, gradients and optimizer state" in tight[0] and "(ulimit -v 1)" in tight[0]
    just_the_model = memory_problems(s, run, (state_bytes(s) + 1000, "a small machine"))
    assert len(just_the_model) == 1 and just_the_model[0].startswith("the run: a micro-batch of 32 x 64 tokens")
    huge = 2 * LOGITS_LIMIT // (s.vocab_size * 4)  # tokens whose logits are twice the limit
    logits = memory_problems(s, run + [("phase 1", huge, 1)], (10**15, "plenty"))
    assert len(logits) == 1 and logits[0].startswith("phase 1: a micro-batch of 1 x") and "16.0 GiB of fp32 logits" in logits[0]


def test_a_phase_whose_shape_the_memory_refuses_is_refused_with_the_settings(dataset, tmp_path):
    path = tmp_path / "phases.toml"
    path.write_text(f'[datasets.mix]\nfiles = "{dataset["data_path"]}/*train_*.bin"\n'
                    '[[phase]]\nname = "short"\nuntil_progress = 0.5\nmixture = { mix = 1.0 }\n'
                    '[[phase]]\nname = "long"\nseq_len = 4194304\nbatch_tokens = 8388608\nmixture = { mix = 1.0 }\n')
    errors = tg.check_settings(tg.parse_settings(trainer_env(dataset, tmp_path, CURRICULUM_PHASES=str(path)))[0])
    assert len(errors) == 1 and "phase 2 (long): seq_len=4194304, batch_tokens=8388608: a micro-batch" in errors[0], errors


def test_the_address_space_limit_is_what_this_process_may_use():
    probe = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, resource.RLIM_INFINITY)); "
             "from trainer.memory import usable_bytes; print(*usable_bytes(), sep='|')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    usable, what = out.split("|")
    assert what.startswith("ulimit -v") and 0 < int(usable) < 3 * 2**30
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != 3 * 2**30  # this process untouched
    assert usable_bytes() is not None


def test_an_allocation_that_fails_is_named_as_out_of_memory():
    assert tg.out_of_memory(MemoryError())
    assert tg.out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"))
    assert tg.out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not tg.out_of_memory(RuntimeError("Connection closed by peer"))


@pytest.mark.parametrize("name", ["WORLD_SIZE", "GRAD_ACCUM_STEPS", "TRAIN_SEQ_LEN", "TRAIN_BATCH_TOKENS", "NUM_LAYERS",
                                  "MODEL_DIM", "NUM_HEADS", "MLP_MULT", "VOCAB_SIZE"])
def test_a_shape_setting_at_zero_is_its_own_error_not_the_memory_check_s(dataset, tmp_path, name):
    s, errors = tg.parse_settings(trainer_env(dataset, tmp_path, **{name: "0"}))
    errors += tg.check_settings(s)  # no division by zero on the way
    assert any(e.startswith(f"{name}='0'") for e in errors), errors
    assert not any("micro-batch of" in e or "parameters need" in e for e in errors)
