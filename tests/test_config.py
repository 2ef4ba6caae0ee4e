"""curriculum/config.py: the data path's settings as values: the micro-batch formula, the pool a
curriculum reads, every invalid MIX and CURRICULUM setting named at once, and the reference losses."""
from __future__ import annotations

import pytest

from curriculum.config import CurriculumConfig, MixConfig, Shape, parse_reference, read_curriculum
from curriculum.environment import EnvReader


def test_a_micro_batch_is_the_step_s_tokens_over_ranks_accumulation_and_length():
    assert Shape(256, 8192, 2, 4).micro_batch_seqs == 4
    assert Shape(1024, 786_432, 8, 1).micro_batch_seqs == 96  # the record track's
    assert Shape(256, 8192).micro_batch_seqs == 32


def test_the_pool_is_the_kept_rows_times_the_oversampling_rounded_up_and_only_when_on():
    assert CurriculumConfig().pool_size(32) == 32
    assert CurriculumConfig(enabled=True).pool_size(32) == 64
    assert CurriculumConfig(enabled=True, oversample=1.5).pool_size(3) == 5
    assert CurriculumConfig(enabled=True, oversample=1.0).pool_size(7) == 7


def test_every_bad_curriculum_setting_is_named_together():
    problems = CurriculumConfig(enabled=True, oversample=0.5, pool="sideways", peak=1.5).problems()
    for name in ("CURRICULUM_OVERSAMPLE=0.5", "CURRICULUM_POOL='sideways'", "CURRICULUM_PEAK=1.5"):
        assert any(p.startswith(name) for p in problems), (name, problems)
    assert CurriculumConfig(oversample=float("inf")).problems() == ["CURRICULUM_OVERSAMPLE=inf: must be >= 1"]
    e = EnvReader({"CURRICULUM": "1", "CURRICULUM_POOL": "carry", "CURRICULUM_OVERSAMPLE": "3"})
    assert read_curriculum(e) == CurriculumConfig(enabled=True, pool="carry", oversample=3.0) and not e.errors


@pytest.mark.parametrize("mix, phases, says", [
    (MixConfig(mode="natural"), False, "MIX=natural: needs MIX_DATASETS"),
    (MixConfig(mode="natural", datasets="a=x/*.bin"), False, "a mixture needs two or more datasets"),
    (MixConfig(mode="natural", datasets="a=x,a=y"), False, "a name appears twice"),
    (MixConfig(mode="natural", datasets="a=x,=y"), False, "each part must be name=glob ('=y' is not)"),
    (MixConfig(mode="adaptive", rule="excess_loss", datasets="a=x,b=y"), False, "MIX_RULE=excess_loss: needs MIX_REFERENCE"),
    (MixConfig(mode="adaptive", rule="excess_loss", datasets="a=x,b=y", reference="a=2.5"), False, "no loss for b"),
    (MixConfig(mode="adaptive", datasets="a=x,b=y", reference="a=nan,b=1"), False, "must be name=loss"),
    (MixConfig(mode="adaptive", datasets="a=x,b=y"), True, "a phases file names the datasets it blends"),
])
def test_each_bad_mix_setting_is_named(mix, phases, says):
    assert any(says in p for p in mix.problems(phases=phases)), mix.problems(phases=phases)


def test_a_valid_mix_has_no_problem_and_its_reference_parses():
    assert MixConfig(mode="natural", datasets="docs=a/*.bin, code=b/*.bin").problems() == []
    assert MixConfig(mode="natural", datasets="docs=a/*.bin,code=b/*.bin").named_globs() == [
        ("docs", "a/*.bin"), ("code", "b/*.bin")]
    assert parse_reference("docs=2.5, code=3") == {"docs": 2.5, "code": 3.0}
    with pytest.raises(ValueError, match="code"):
        parse_reference("docs=2.5,code")
