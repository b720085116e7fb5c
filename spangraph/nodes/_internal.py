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
from ._span import _KINDS as SPAN_KINDS
from ._span import BLOCK as BLOCK
from ._span import CUSTOM as CUSTOM
from ._span import FAST_RENDERS as FAST_RENDERS
from ._span import MODEL as MODEL
from ._span import NOT_SPAN as NOT_SPAN
from ._span import THUNK as THUNK
from ._span import WORK_KINDS as WORK_KINDS
from ._span import PathTracker as PathTracker
from ._span import _class_key as class_key
from ._span import _cycle_text as cycle_text
from ._span import _step as path_step
from ._span import _store_id as store_id
from ._span import as_span as as_span
from ._span import cached_id as cached_id
from ._span import children_of as children_of
from ._span import is_span as is_span
from ._span import node_digest as node_digest
from ._span import span_id as span_id
from ._span import span_label as span_label
from ._state import compose as compose
from ._state import current_state as current_state
from ._thunk import NO_OPTIONS as NO_OPTIONS
from ._thunk import GenerationProducer as GenerationProducer
from ._thunk import Producer as Producer
from ._thunk import StateLike as StateLike

__all__ = [
    "BLOCK",
    "CUSTOM",
    "FAST_RENDERS",
    "MODEL",
    "NOT_SPAN",
    "NO_OPTIONS",
    "SPAN_KINDS",
    "TEXT_OUTPUT",
    "THUNK",
    "WORK_KINDS",
    "GenerationProducer",
    "PathTracker",
    "Producer",
    "StateLike",
    "as_span",
    "cached_id",
    "canonical_json",
    "children_of",
    "class_key",
    "compose",
    "current_state",
    "cycle_text",
    "digest",
    "fresh_copies",
    "is_span",
    "node_digest",
    "path_step",
    "span_id",
    "span_label",
    "store_id",
]
