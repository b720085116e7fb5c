"""Samplers and requirement checks, built on execution states."""

from ._node import SamplerProducer, sample
from ._requirements import (
    JudgeQuestion,
    ValidationResult,
    length_between,
    matches,
    one_of,
    parses_as,
    validate,
)
from ._samplers import BestOfN, HyperParamSweep, MajorityVote, RejectionSampler, Sampler

__all__ = [
    "BestOfN",
    "HyperParamSweep",
    "JudgeQuestion",
    "MajorityVote",
    "RejectionSampler",
    "Sampler",
    "SamplerProducer",
    "ValidationResult",
    "length_between",
    "matches",
    "one_of",
    "parses_as",
    "sample",
    "validate",
]
