"""What verifying a KV slot file costs, against restoring it and prefilling it.

On the real embedded engine: one ~1,500-token prefix (the start of the
Apache License 2.0) is prefilled and saved; then, best of ``ROUNDS``:
prefill of the prefix, llama.cpp's restore of the saved file, its sha256
(what the store checks) and blake2b (the alternative), and the store's
``verified()`` cold (reads the file) and warm (the file's stat unchanged).

    python benchmarks/kv_verify.py
"""

from __future__ import annotations

import hashlib
import pathlib
import tempfile
import time
from collections.abc import Callable

from spangraph.cache import KVPrefixStore
from spangraph.engines import LlamaCppEngine

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENT = (ROOT / "examples" / "apache-2.0.txt").read_text()[:7400]
ROUNDS = 7


def best_ms(action: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def digest(path: pathlib.Path, name: str) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, name).hexdigest()


def main() -> None:
    with tempfile.TemporaryDirectory() as kv:
        engine = LlamaCppEngine(kv_dir=kv, n_ctx=4096, n_parallel=1)
        shared = engine.shared()
        tokens = len(shared.http("/tokenize", {"content": DOCUMENT})["tokens"])

        def prefill() -> None:
            shared.http("/slots/0?action=erase", {})
            shared.server.handle_completions(
                {"prompt": DOCUMENT, "n_predict": 1, "id_slot": 0, "cache_prompt": True}
            )

        prefill_ms = best_ms(prefill, rounds=3)
        store = engine.kv_store
        temp = store.temp_name("0" * 40)
        shared.http("/slots/0?action=save", {"filename": temp})
        store.commit("0" * 40, temp, tokens)
        path = store.path("0" * 40)
        restore_ms = best_ms(
            lambda: shared.http("/slots/0?action=restore", {"filename": path.name})
        )
        sha256_ms = best_ms(lambda: digest(path, "sha256"))
        blake2b_ms = best_ms(lambda: digest(path, "blake2b"))
        cold_ms = best_ms(lambda: KVPrefixStore(kv, model=engine.model_sha256).verified("0" * 40))
        warm_ms = best_ms(lambda: store.verified("0" * 40))
        size = path.stat().st_size / 2**20
        engine.close()
    print(f"prefix: {tokens} tokens, slot file {size:.1f} MiB")
    print(f"prefill of the prefix       {prefill_ms:8.1f} ms")
    print(f"restore of the file         {restore_ms:8.1f} ms")
    print(f"sha256 of the file          {sha256_ms:8.1f} ms ({size * 1000 / sha256_ms:.0f} MiB/s)")
    print(
        f"blake2b of the file         {blake2b_ms:8.1f} ms ({size * 1000 / blake2b_ms:.0f} MiB/s)"
    )
    print(f"verified(), new store       {cold_ms:8.1f} ms (opens the index, reads the file)")
    print(f"verified(), file unchanged  {warm_ms:8.3f} ms (stat only)")


if __name__ == "__main__":
    main()
