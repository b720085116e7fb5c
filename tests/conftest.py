from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENT = (ROOT / "examples" / "apache-2.0.txt").read_text()


@pytest.fixture(scope="session")
def spangraph_home(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One SPANGRAPH_HOME for the session: the model is assembled into it once.

    The user's real home is left alone; a KV directory per test comes from
    ``llama``'s own ``home`` where a test needs isolation.
    """
    shared = os.environ.get("SPANGRAPH_TEST_HOME")
    return pathlib.Path(shared) if shared else tmp_path_factory.mktemp("spangraph-home")


@pytest.fixture(scope="session")
def llama(spangraph_home: pathlib.Path) -> Iterator[object]:
    """The real embedded engine, loaded once for the whole session."""
    from spangraph.engines import LlamaCppEngine

    engine = LlamaCppEngine(home=spangraph_home, n_ctx=8192, n_parallel=2)
    engine.shared()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[object]:
    """A real redis-server for the module's tests (a random key, no persistence),
    stopped after them."""
    from tests.redis_server import redis_server as start

    with start() as server:
        yield server
