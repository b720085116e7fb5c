"""What the output memo reports when it cannot do its job."""

from __future__ import annotations

import os


class MemoStoreError(Exception):
    """A memo store cannot use the file it was given, or cannot write to it.

    Raised when a ``SQLiteStore`` is opened on:

    - an SQLite database that is not a spangraph memo (another program's
      database): it is left exactly as it was; give the store a path of its
      own;
    - a spangraph memo written by a newer spangraph (a newer schema): left
      as it was; upgrade spangraph, or give this version a path of its own;
    - a file that is not a database and cannot be set aside (a read-only
      folder), or a path that cannot be created or read: remove or move the
      file, or choose a writable path.

    And by ``SQLiteStore.put`` on a store opened read-only. During a run
    that one is never fatal: the generate protocol keeps the generation's
    output, warns once per run and counts it in ``Run.cache_write_errors``.

    ``path`` is the file concerned.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"span cache {self.path}: {message}")


def describe_failure(where: str, operation: str, error: BaseException) -> str:
    """The warning a run gives the first time a memo operation fails.

    ``where`` names the store (its repr). The error's own message is cut short;
    stores never put entry contents in their errors (``SQLiteStore`` reads rows
    as bytes, so SQLite cannot quote a row it fails to decode).
    """
    message = str(error)
    if len(message) > 200:
        message = message[:200] + "…"
    return (
        f"span cache {where}: {operation} failed ({type(error).__name__}: {message}). "
        "The run goes on and keeps every output; later memo failures of this run are "
        "not warned again but counted in Run.cache_write_errors / Run.cache_read_errors."
    )


def describe_bad_entries(where: str) -> str:
    """The warning a run gives the first time it meets an unusable memo entry."""
    return (
        f"span cache {where}: skipped a memo entry that could not be read (corrupt, or "
        "not the shape of a memo entry); it is recomputed. Later ones in this run are "
        "counted in Run.cache_bad_entries, not warned."
    )
