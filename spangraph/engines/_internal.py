"""What spangraph's other packages may use of ``engines`` beyond its public names.
For spangraph's own packages; not public: no name here is kept stable for users,
and nothing here is in ``spangraph.engines``.

Another package imports a public name from ``spangraph.engines`` and anything
else from here, never from a private module of ``engines`` (a test checks it).
"""

from typing import TYPE_CHECKING, Any

from ._base import declare as declare
from ._default import ENGINE_VARIABLE as ENGINE_VARIABLE
from ._default import default_spec as default_spec
from ._handoff import InlineDriver as InlineDriver
from ._models import MODELS as MODELS
from ._models import PackagedModel as PackagedModel
from ._models import check_gguf as check_gguf
from ._models import installed as installed
from ._models import model_digest as model_digest
from ._options import check_options as check_options
from ._remote import Dispatch as Dispatch
from ._remote import RemoteEngine as RemoteEngine
from ._remote import serve as serve
from ._types import TOOL_STEPS as TOOL_STEPS
from ._types import WorkerRun as WorkerRun

if TYPE_CHECKING:
    from ._llamacpp import spangraph_home as spangraph_home

#: Imported from ``_llamacpp`` on first use, as ``LlamaCppEngine`` is: ``import
#: spangraph`` loads no llama.cpp module.
_LLAMACPP = ("spangraph_home",)


def __getattr__(name: str) -> Any:
    if name in _LLAMACPP:
        from . import _llamacpp

        return getattr(_llamacpp, name)
    raise AttributeError(f"module 'spangraph.engines._internal' has no attribute {name!r}")


__all__ = [
    "ENGINE_VARIABLE",
    "MODELS",
    "TOOL_STEPS",
    "Dispatch",
    "InlineDriver",
    "PackagedModel",
    "RemoteEngine",
    "WorkerRun",
    "check_gguf",
    "check_options",
    "declare",
    "default_spec",
    "installed",
    "model_digest",
    "serve",
    "spangraph_home",
]
