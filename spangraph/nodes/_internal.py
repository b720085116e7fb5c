"""What spangraph's other packages (and ``spangraph.lowlevel``) may use of ``nodes``
beyond its public names. For spangraph's own packages; not public: no name here
is kept stable for users, and nothing here is in ``spangraph.nodes``.

Another package imports a public name from ``spangraph.nodes`` and anything
else from here, never from a private module of ``nodes`` (a test checks it).
A name that is private in its own module is given here without its
underscore, and the importer may alias it back.
"""

from ._component import TEXT_OUTPUT as TEXT_OUTPUT
from ._copy import fresh_copies as fresh_copies
from ._digest import canonical_json as canonical_json
from ._digest import digest as digest
from ._label import action_hint as action_hint
from ._label import display_label as display_label
from ._label import shorten as shorten
from ._label import structural_part as structural_part
from ._label import value_hint as value_hint
from ._span import FAST_RENDERS as FAST_RENDERS
from ._span import WORK_KINDS as WORK_KINDS
from ._span import PathTracker as PathTracker
from ._span import SpanIds as SpanIds
from ._span import TailMemo as TailMemo
from ._span import as_span as as_span
from ._span import cached_id as cached_id
from ._span import cut_path as cut_path
from ._span import is_span as is_span
from ._span import node_kind as node_kind
from ._span import span_id as span_id
from ._span import span_label as span_label
from ._span import walk_ids as walk_ids
from ._state import compose as compose
from ._state import current_state as current_state
from ._thunk import NO_OPTIONS as NO_OPTIONS
from ._thunk import GenerationProducer as GenerationProducer
from ._thunk import Producer as Producer
from ._thunk import StateLike as StateLike

__all__ = [
    "FAST_RENDERS",
    "NO_OPTIONS",
    "TEXT_OUTPUT",
    "WORK_KINDS",
    "GenerationProducer",
    "PathTracker",
    "Producer",
    "SpanIds",
    "StateLike",
    "TailMemo",
    "action_hint",
    "as_span",
    "cached_id",
    "canonical_json",
    "compose",
    "current_state",
    "cut_path",
    "digest",
    "display_label",
    "fresh_copies",
    "is_span",
    "node_kind",
    "shorten",
    "span_id",
    "span_label",
    "structural_part",
    "value_hint",
    "walk_ids",
]
