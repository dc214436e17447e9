"""Deterministic pseudo-random numbers for the demo simulation: a value is a pure function of a seed and keys.

The simulation must give the same reading for the same (seed, host, GPU, time) however often, in whatever
order and in whichever process it is asked, so it cannot draw from a stateful generator. Every number here is
a hash (SplitMix64's finaliser) of the seed and integer keys. ``hash()`` of a string is not used anywhere: it
changes with ``PYTHONHASHSEED`` between processes.
"""

from __future__ import annotations

import math

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TO_UNIT = 1.0 / (1 << 53)
# Four 16-bit slices of one hash summed (Irwin-Hall) have variance 4/12; this scales them to 1.
_IRWIN_HALL_SCALE = math.sqrt(3.0)
_SLICE = 1.0 / (1 << 16)


def mix(seed: int, *keys: int) -> int:
    """A 64-bit hash of ``seed`` and ``keys`` (negative keys welcome: they are taken modulo 2**64)."""
    state = seed & _MASK64
    for key in keys:
        state = ((state ^ (key & _MASK64)) + _GOLDEN) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state


def uniform(seed: int, *keys: int) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``keys``."""
    return (mix(seed, *keys) >> 11) * _TO_UNIT


def normal(seed: int, *keys: int) -> float:
    """An approximately standard normal number (mean 0, deviation 1, within +-3.5) fixed by the keys."""
    bits = mix(seed, *keys)
    total = 0.0
    for _ in range(4):
        total += (bits & 0xFFFF) * _SLICE
        bits >>= 16
    return (total - 2.0) * _IRWIN_HALL_SCALE


def wobble(seed: int, key: int, t: float, period_s: float) -> float:
    """Smooth noise in [-1, 1] over time: random values ``period_s`` apart, eased from one to the next.

    Readings that jump to a fresh random value every second look like a broken sensor; this drifts.
    """
    position = t / period_s
    cell = math.floor(position)
    fraction = position - cell
    start = uniform(seed, key, cell) * 2.0 - 1.0
    end = uniform(seed, key, cell + 1) * 2.0 - 1.0
    eased = fraction * fraction * (3.0 - 2.0 * fraction)
    return start + (end - start) * eased
