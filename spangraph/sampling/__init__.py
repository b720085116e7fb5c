"""Samplers and requirement checks, built on execution states."""

from ._node import sample as sample
from ._requirements import ValidationResult as ValidationResult
from ._requirements import length_between as length_between
from ._requirements import matches as matches
from ._requirements import never_matches as never_matches
from ._requirements import one_of as one_of
from ._requirements import parses_as as parses_as
from ._requirements import validate as validate
from ._samplers import BestOfN as BestOfN
from ._samplers import HyperParamSweep as HyperParamSweep
from ._samplers import MajorityVote as MajorityVote
from ._samplers import RejectionSampler as RejectionSampler
from ._samplers import Sampler as Sampler

__all__ = [
    "BestOfN",
    "HyperParamSweep",
    "MajorityVote",
    "RejectionSampler",
    "Sampler",
    "ValidationResult",
    "length_between",
    "matches",
    "never_matches",
    "one_of",
    "parses_as",
    "sample",
    "validate",
]
