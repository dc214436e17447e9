"""The ordered list of every log line family the engine tries: framework-specific ones, then fallbacks."""

from __future__ import annotations

from trainmon_tui.parsers.trainlog import (
    fam_deepspeed,
    fam_fairseq,
    fam_generic,
    fam_hf,
    fam_keras,
    fam_lightning,
    fam_megatron,
    fam_metriclogger,
    fam_mmengine,
    fam_nanogpt,
    fam_torchtitan,
    fam_tqdm,
    fam_ultralytics,
)
from trainmon_tui.parsers.trainlog.base import LineFamily

# Order matters only where two families could read the same line; each family's own regexes keep that rare.
SPECIFIC_FAMILIES: tuple[type[LineFamily], ...] = (
    *fam_ultralytics.FAMILIES,
    *fam_keras.FAMILIES,
    *fam_lightning.FAMILIES,
    *fam_hf.FAMILIES,
    *fam_megatron.FAMILIES,
    *fam_deepspeed.FAMILIES,
    *fam_nanogpt.FAMILIES,
    *fam_torchtitan.FAMILIES,
    *fam_fairseq.FAMILIES,
    *fam_mmengine.FAMILIES,
    *fam_metriclogger.FAMILIES,
)

# Families that read shapes every framework prints (a bare tqdm bar, "key: value"): tried after all others,
# and named as a file's format only when no specific family matched anything.
FALLBACK_FAMILIES: tuple[type[LineFamily], ...] = (
    *fam_tqdm.FAMILIES,
    *fam_generic.FAMILIES,
)

ALL_FAMILIES: tuple[type[LineFamily], ...] = SPECIFIC_FAMILIES + FALLBACK_FAMILIES

FALLBACK_NAMES: frozenset[str] = frozenset(family.name for family in FALLBACK_FAMILIES)
