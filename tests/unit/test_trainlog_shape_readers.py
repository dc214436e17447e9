"""Families' per-shape readers (``for_shape``) read every line of a shape exactly as ``parse`` does.

A reader is made from one line and then used for every line whose digits differ from it (the engine caches it
per digit-masked shape), so each test reads lines through readers made from *other* lines of the same shape:
every fixture line, copies of it with other digits, and arbitrary text. The families keep state (Generic's
indented blocks), so lines go through two instances side by side, one by ``parse``, one by readers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.family_helpers import engine_cleaned
from trainmon_tui.parsers.trainlog.base import Hit, ShapeAwareFamily
from trainmon_tui.parsers.trainlog.fam_deepspeed import DeepSpeedFamily
from trainmon_tui.parsers.trainlog.fam_fairseq import FairseqFamily
from trainmon_tui.parsers.trainlog.fam_generic import GenericFamily
from trainmon_tui.parsers.trainlog.fam_hf import HfTrainerFamily
from trainmon_tui.parsers.trainlog.fam_keras import KerasFamily
from trainmon_tui.parsers.trainlog.fam_lightning import LightningFamily
from trainmon_tui.parsers.trainlog.fam_megatron import MegatronFamily
from trainmon_tui.parsers.trainlog.fam_metriclogger import MetricLoggerFamily
from trainmon_tui.parsers.trainlog.fam_mmengine import MmcvFamily, MmengineFamily
from trainmon_tui.parsers.trainlog.fam_nanogpt import ModdedNanoGptFamily, NanoGptFamily
from trainmon_tui.parsers.trainlog.fam_torchtitan import TorchTitanFamily
from trainmon_tui.parsers.trainlog.fam_tqdm import TqdmFamily
from trainmon_tui.parsers.trainlog.fam_ultralytics import UltralyticsFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
SHAPE_AWARE: list[type[ShapeAwareFamily]] = [
    NanoGptFamily,
    ModdedNanoGptFamily,
    GenericFamily,
    KerasFamily,
    LightningFamily,
    FairseqFamily,
    MegatronFamily,
    HfTrainerFamily,
    TorchTitanFamily,
    TqdmFamily,
    UltralyticsFamily,
    MmengineFamily,
    MmcvFamily,
    MetricLoggerFamily,
    DeepSpeedFamily,
]
_MASK = bytes.maketrans(b"123456789", b"000000000")


def _shape(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass").translate(_MASK)


def _other_digits(line: str, rng: random.Random) -> str:
    """The same shape with other digits."""
    return "".join(rng.choice("0123456789") if char in "0123456789" else char for char in line)


def _fixture_lines() -> list[str]:
    """Every line of every log fixture in file order (families keep state: a header, then its rows), each
    as printed and, where that differs, as the engine hands it over (rank prefix and timestamp removed)."""
    lines: list[str] = []
    for path in sorted(LOGS.rglob("*.txt")):
        with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
            for printed in handle.read().replace("\r", "\n").split("\n"):
                line = printed.rstrip()
                if 0 < len(line) < 2000:
                    cleaned = engine_cleaned(line)
                    lines += [line] if cleaned == line else [line, cleaned]
    return lines


FIXTURE_LINES = _fixture_lines()


def _both_ways(family_type: type[ShapeAwareFamily], lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """What ``parse`` gives for each line, and what the reader made from the shape's first line gives."""
    by_parse = family_type()
    by_reader = family_type()
    readers: dict[bytes, Callable[[str], Hit | None]] = {}
    expected: list[str] = []
    got: list[str] = []
    for line in lines:
        reader = readers.get(_shape(line))
        if reader is None:
            reader = readers[_shape(line)] = by_reader.for_shape(line)
        # repr: a NaN metric compares unequal to itself, its repr does not.
        expected.append(repr(by_parse.parse(line)))
        got.append(repr(reader(line)))
    return expected, got


def test_fixtures_hold_lines_for_each_reader() -> None:
    # The least each family reads among the fixture lines, so the comparisons below compare something.
    least: dict[type[ShapeAwareFamily], int] = {
        NanoGptFamily: 80,
        ModdedNanoGptFamily: 150,
        GenericFamily: 300,
        KerasFamily: 80,
        LightningFamily: 30,
        FairseqFamily: 30,
        MegatronFamily: 15,
        HfTrainerFamily: 40,
        TorchTitanFamily: 15,
        TqdmFamily: 1000,
        UltralyticsFamily: 30,
        MmengineFamily: 3,
        MmcvFamily: 3,
        MetricLoggerFamily: 10,
        DeepSpeedFamily: 30,
    }
    assert set(least) == set(SHAPE_AWARE)
    for family_type, count in least.items():
        family = family_type()
        assert sum(family.parse(line) is not None for line in FIXTURE_LINES) >= count, family_type.name


@pytest.mark.parametrize("family_type", SHAPE_AWARE, ids=lambda family: family.name)
def test_readers_read_every_fixture_line_and_its_digit_variants_like_parse(
    family_type: type[ShapeAwareFamily],
) -> None:
    rng = random.Random(20261121)
    variants = [_other_digits(line, rng) for line in FIXTURE_LINES]
    # Each variant follows its original: the variant is read by the reader made from the original.
    lines = [line for pair in zip(FIXTURE_LINES, variants, strict=True) for line in pair]
    expected, got = _both_ways(family_type, lines + variants[::-1])
    assert got == expected
    assert sum(hit != "None" for hit in expected) > 0


def test_a_reader_reads_values_not_the_first_lines_values() -> None:
    modded = ModdedNanoGptFamily()
    reader = modded.for_shape("step:100/20344 train_loss:3.2000 train_time:12345ms step_avg:123.45ms")
    hit = reader("step:250/20344 train_loss:2.7500 train_time:54321ms step_avg:nanms")
    assert hit is not None
    assert (hit.step, hit.total_steps, hit.metrics) == (250, 20344, {"loss": 2.75, "train_time_ms": 54321.0})
    karpathy = NanoGptFamily()
    reader = karpathy.for_shape("iter 100: loss 2.1000, time 30.10ms, mfu 5.20%")
    hit = reader("iter 900: loss 1.9000, time 31.70ms, mfu 9.90%")
    assert hit is not None
    assert (hit.step, hit.metrics) == (900, {"loss": 1.9, "time_ms": 31.7, "mfu": 9.9})
    # nanoGPT's MFU placeholder is a value, not a shape: the reader still leaves it out.
    reader = karpathy.for_shape("iter 100: loss 2.1000, time 30.10ms, mfu -555.55%")
    hit = reader("iter 101: loss 2.0000, time 30.10ms, mfu -100.00%")
    assert hit is not None and "mfu" not in hit.metrics


def test_generic_reader_of_a_plain_line_still_reads_an_open_block() -> None:
    family = GenericFamily()
    reader = family.for_shape("                abs_rel: 0.08523062198386379")
    assert reader("                abs_rel: 0.08523062198386379") is None  # no block open
    assert family.parse("Epoch 14 - Evaluation time (seconds): 7.51 - Vis metrics:") is not None
    hit = reader("                abs_rel: 0.07")
    assert hit is not None and hit.metrics == {"abs_rel": 0.07} and hit.epoch == 14.0


# Lines close to the nanoGPT shapes, with odd values and units, so the readers' less common paths are taken.
_KARPATHY_LIKE = (
    r"(iter|step) [0-9]{1,4}: (train )?loss [0-9.,%a-z]{1,8}(, [a-z ]{1,8} [-0-9.]{1,7}(ms|s|%)?){0,3}"
)
_MODDED_LIKE = r"step:[0-9]{1,4}(/[0-9]{1,5})?( [a-z_]{1,8}:([0-9.]{1,6}(ms|s)?|nanms|[0-9,.a-z]{0,6})){1,4}"
_KERAS_LIKE = r" *[0-9]{1,4}/([0-9]{1,4}|Unknown)( \[[=>.]{0,4}\]| ━{1,3})?( - [0-9a-zA-Z_:./ ]{0,10}){0,4}"
_LIGHTNING_LIKE = (
    r"Epoch [0-9]{1,3}: +[0-9]{1,3}%\|[█ ]{0,3}\| [0-9]{1,4}/[0-9]{1,4}"
    r"( \[[0-9:<]{0,8}(, [0-9a-z_=./ ]{0,12}){0,4}\]?)?"
)
_FAIRSEQ_LIKE = (
    r"(2020-07-17 07:[0-9]{2}:[0-9]{2} \| INFO \| train_inner \| )?"
    r"epoch [0-9]{1,3}: +[0-9]{1,4} / [0-9]{1,5} ([a-z_]{1,11}=([0-9.]{1,6}%?|[0-9.,a-z]{0,5})(, )?){1,4}"
)
_HF_LIKE = (
    r"( {0,2}[0-9]{1,3}%\|[█ ]{0,3}\| [0-9]{1,4}/[0-9]{1,4} \[[0-9:<]{0,6}, [0-9.]{1,4}it/s\])?"
    r"\{('[a-z_/]{1,10}': ([-0-9.e]{1,8}|nan|None)(, )?){0,4}\}?"
)
_TORCHTITAN_LIKE = (
    r"(\[titan\] 2025-0[0-9]-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3} - root - INFO - )?"
    r"(validate )?step: {0,2}[0-9]{1,5}  ([a-z]{1,6}: {0,2}[0-9.,%]{1,7}(GiB\([0-9.]{1,5}%\))? {0,2}){0,4}"
)
_TQDM_LIKE = (
    r"([A-Za-z]{0,6}: ?)? {0,2}[0-9]{1,3}%\|[█ ]{0,3}\| [0-9]{1,4}/[0-9]{1,4}"
    r"( \[[0-9:<]{0,6}, [0-9.]{1,4}(it|s|ex)/(s|it)(, [a-z_]{1,6}=[0-9.a-z]{1,5}){0,3}\]?)?"
)
_ULTRALYTICS_LIKE = (
    r"( {0,4}Epoch {1,4}GPU_mem {1,3}box_loss {1,3}cls_loss {1,3}Instances {1,3}Size)"
    r"|( {0,9}[0-9]{1,3}/[0-9]{1,3} {1,6}[0-9.]{1,4}G( {1,6}[0-9.a-z]{1,6}){0,5}"
    r"(: {1,3}[0-9]{1,3}%\|[█ ]{0,2}\| [0-9]{1,2}/[0-9]{1,2})?)"
)
_MM_VALUE = r"([0-9.e-]{1,7}|nan|[0-9]:[0-9]{2}:[0-9]{2}|[0-9] days, [0-9]:[0-9]{2}:[0-9]{2})"
_MMENGINE_LIKE = (
    r"(10/30 22:1[0-9]:[0-9]{2} - mmengine - INFO - )?(Epoch|Iter)\((train|val|te5t)\) ?(\[[0-9]{1,2}\])?"
    r"\[ ?[0-9]{1,3}(/[0-9]{1,4})?\]  [a-z_]{1,5}: " + _MM_VALUE + r"(  [a-z_]{0,5}: " + _MM_VALUE + r"){0,3}"
)
_MMCV_LIKE = (
    r"(2021-11-22 01:3[0-9]:[0-9]{2},[0-9]{3} - mmocr - INFO - )?(Epoch|Iter)(\((val|train)\))? ?"
    r"(\[[0-9]{1,2}\])?\[[0-9]{1,3}(/[0-9]{1,4})?\]\t[a-z_]{1,5}: "
    + _MM_VALUE
    + r"(, ([a-z_]{0,5}: "
    + _MM_VALUE
    + r"|[0-9]{1,2})){0,4}"
)
_MEGATRON_LIKE = (
    r"( ?\[2025-0[0-9]-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\])? iteration +[0-9]{1,4}/ +[0-9]{1,5} \|"
    r"( [a-z ]{0,10}: [0-9.E+a-z-]{0,9} \|){0,4}"
)

_JSON_PAIR_LIKE = (
    r'"[a-z_]{1,11}": ?(-?[0-9]{1,4}(\.[0-9]{1,3})?(e-[0-9])?|"[-0-9.%a-z]{0,6}"|true|null|\[0\])'
)
_FAIRSEQ_RECORD_LIKE = (
    r"(\| INFO \| (train|valid) \| )?\{(" + _JSON_PAIR_LIKE + ", ){0,3}" + _JSON_PAIR_LIKE + r"\}"
)
_FAIRSEQ_SUMMARY_LIKE = (
    r"(\| INFO \| (fairseq\.trainer|valid) \| )?(NOTE: overflow detected, setting loss scale to: [0-9.]{1,5}"
    r"|epoch [0-9]{1,3}( \| (valid on '[a-z0-9]{1,5}' subset|[a-z_0-9]{1,9} [-0-9.%a-z,]{0,6})){1,4}( \|)?)"
)
_DEEPSPEED_LIKE = (
    r"(\[2022-03-11 02:06:5[0-9],[0-9]{3}\] )?"
    r"(\[Rank [0-9]\] step=[0-9]{1,3}, skipped=[0-9], lr=\[[-0-9.e, a-z]{0,9}\]"
    r"|epoch=0/micro_step=[0-9]{1,2}/global_step=[0-9]{1,3},"
    r"( [A-Za-z0-9]{1,6}=[-0-9.,]{1,6}[A-Z]{0,2},?){0,3}"
    r"|[0-9]/[0-9]{1,2}, SamplesPerSec=[0-9.a-z/]{1,6}(, [A-Za-z]{1,6}=[0-9.]{1,4}(GB)?){0,2}"
    r"|OVERFLOW! (Rank [0-9] )?Skipping step\. Attempted loss scale: [0-9]{1,5}(, reducing to [0-9]{1,4})?"
    r"| (validation|test) results at iteration [0-9]{1,3} \|( [a-z_0-9 ]{1,9}: [0-9.E+a-z]{0,7} \|){0,3})"
)
_METRICLOGGER_LIKE = (
    r"(Epoch: \[[0-9]{1,3}\]|Averaged stats:|Test: ) {1,2}(\[ ?[0-9]{1,3}/[0-9]{1,4}\])?"
    r"( {1,2}\*{0,2}[a-z_0-9]{1,6}: ([0-9]{1,3}\.[0-9]{1,4}|[-0-9.%]{1,6}( \([0-9.na]{1,5}\))?"
    r"|[0-9] days?, [0-9]:[0-9]{2}:[0-9]{2}|[0-9]{1,2}:[0-9]{2}:[0-9]{2})\*{0,2}){0,4}"
)
_GENERIC_LIKE = (
    r"([A-Za-z]{1,6}[:=]? ?)?(epoch|Epoch|iter|step|batch|İ)[:= \[]{0,2}[0-9]{1,3}(/[0-9]{1,3})?\]?"
    r"( [a-zA-Z_]{1,6}[:=]? ?[-0-9.,e]{1,6}){0,3}( metrics:)?"
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(FIXTURE_LINES),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
            st.from_regex(_KARPATHY_LIKE, fullmatch=True),
            st.from_regex(_MODDED_LIKE, fullmatch=True),
            st.from_regex(_KERAS_LIKE, fullmatch=True),
            st.from_regex(_LIGHTNING_LIKE, fullmatch=True),
            st.from_regex(_FAIRSEQ_LIKE, fullmatch=True),
            st.from_regex(_MEGATRON_LIKE, fullmatch=True),
            st.from_regex(_HF_LIKE, fullmatch=True),
            st.from_regex(_TORCHTITAN_LIKE, fullmatch=True),
            st.from_regex(_TQDM_LIKE, fullmatch=True),
            st.from_regex(_ULTRALYTICS_LIKE, fullmatch=True),
            st.from_regex(_MMENGINE_LIKE, fullmatch=True),
            st.from_regex(_MMCV_LIKE, fullmatch=True),
            st.from_regex(_FAIRSEQ_RECORD_LIKE, fullmatch=True),
            st.from_regex(_FAIRSEQ_SUMMARY_LIKE, fullmatch=True),
            st.from_regex(_DEEPSPEED_LIKE, fullmatch=True),
            st.from_regex(_METRICLOGGER_LIKE, fullmatch=True),
            st.from_regex(_GENERIC_LIKE, fullmatch=True),
        ),
        max_size=30,
    ),
    st.randoms(use_true_random=False),
)
def test_readers_read_like_parse_on_any_lines(lines: list[str], rng: random.Random) -> None:
    lines = [line.replace("\n", " ") for line in lines]
    mixed = [line for original in lines for line in (original, _other_digits(original, rng))]
    for family_type in SHAPE_AWARE:
        expected, got = _both_ways(family_type, mixed)
        assert got == expected
