"""``spangraph cache info|prune|clear``: the output memo and the KV-prefix store.

The memo is an ``SQLiteStore`` file (``--memo``, default
``$SPANGRAPH_HOME/memo.db``: give ``spangraph run --cache`` the same path);
the KV store is the folder where the embedded engine saves prefix states
(``--kv``, default ``$SPANGRAPH_HOME/kv``, the engine's own default).
``info`` writes nothing; ``prune`` and ``clear`` go through the stores'
own methods, which other processes using the same files see as ordinary
writes.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import click

from ..cache import KVPrefixStore, MemoStoreError, SQLiteStore
from ._common import ago, byte_size, count, duration, fail, size, span, spangraph_home

MEMO_NAME = "memo.db"
KV_NAME = "kv"


def _where(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--kv",
        "kv_dir",
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=pathlib.Path),
        help=f"The KV-prefix folder. Default: $SPANGRAPH_HOME/{KV_NAME}.",
    )(fn)
    return click.option(
        "--memo",
        "memo_path",
        metavar="PATH",
        type=click.Path(dir_okay=False, path_type=pathlib.Path),
        help=f"The output memo (an SQLite file). Default: $SPANGRAPH_HOME/{MEMO_NAME}.",
    )(fn)


def _only(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--only",
        type=click.Choice(["memo", "kv"]),
        help="Only this store. Default: the one whose path is given (--memo or --kv), else both.",
    )(fn)


@click.group("cache", short_help="The output memo and the KV-prefix store: info, prune, clear.")
def cache_group() -> None:
    """Look at and tidy the span cache: the output memo and the KV-prefix store."""


@cache_group.command("info", short_help="What the memo and the KV store hold.")
@_where
def info_command(memo_path: pathlib.Path | None, kv_dir: pathlib.Path | None) -> int:
    """What the memo (rows, bytes, hits, age) and the KV store (files, bytes, prefixes)
    hold. Changes no entry (SQLite may leave its -shm and an empty -wal beside a memo
    it read)."""
    memo_path, kv_dir = _paths(memo_path, kv_dir)
    if not memo_path.is_file():
        click.echo(f"memo  {memo_path}: none")
    else:
        store = _open_memo(memo_path, read_only=True)
        try:
            m = store.info()
        finally:
            store.close()
        click.echo(f"memo  {memo_path}")
        click.echo(
            f"  {count(m.rows, 'row')}, {size(m.bytes)} of entries ({size(m.file_bytes)} on disk), "
            f"{count(m.hits, 'hit')}, {m.expired} expired"
        )
        if m.rows:
            click.echo(
                f"  written {ago(m.oldest)} (oldest) to {ago(m.newest)} (newest); "
                f"last used {ago(m.last_used)}"
            )
    kv = KVPrefixStore.inspect(kv_dir)
    if kv is None:
        click.echo(f"kv    {kv_dir}: none")
        return 0
    click.echo(f"kv    {kv_dir}")
    click.echo(
        f"  {count(kv.files, 'file')}, {size(kv.bytes)}, "
        f"{count(kv.prefixes, 'prefix', 'prefixes')} ({count(kv.tokens, 'token')}) "
        f"of {count(kv.models, 'model')}"
        + (f", {count(kv.temporary, 'temporary file')}" if kv.temporary else "")
    )
    if kv.prefixes:
        click.echo(f"  used {ago(kv.oldest_use)} (least recently) to {ago(kv.last_use)}")
    return 0


@cache_group.command("prune", short_help="Delete entries unused for a while or over a size.")
@_where
@_only
@click.option(
    "--older-than",
    "older_than",
    callback=duration,
    metavar="DURATION",
    help="Delete entries and files not used for this long: 90s, 15m, 12h, 30d, 2w.",
)
@click.option(
    "--max-bytes",
    callback=byte_size,
    metavar="SIZE",
    help="Then delete the least recently used until each store holds at most this: "
    "500M, 2G, 1.5GiB, 4096.",
)
def prune_command(
    memo_path: pathlib.Path | None,
    kv_dir: pathlib.Path | None,
    only: str | None,
    older_than: float | None,
    max_bytes: int | None,
) -> int:
    """Delete what has not been used for a while, or what is over a size (and the memo's
    expired entries)."""
    if older_than is None and max_bytes is None:
        raise click.UsageError("say what to prune: --older-than DURATION and/or --max-bytes SIZE")
    only = _only_store(memo_path, kv_dir, only)
    memo_path, kv_dir = _paths(memo_path, kv_dir)
    limits = ", ".join(
        ([f"not used for {span(older_than)}"] if older_than is not None else [])
        + ([f"over {size(max_bytes)}"] if max_bytes is not None else [])
    )
    if only != "kv":
        click.echo(f"memo  {memo_path}: " + _prune_memo(memo_path, older_than, max_bytes, limits))
    if only != "memo":
        click.echo(f"kv    {kv_dir}: " + _prune_kv(kv_dir, older_than, max_bytes, limits))
    return 0


def _prune_memo(
    path: pathlib.Path, older_than: float | None, max_bytes: int | None, limits: str
) -> str:
    if not path.is_file():
        return "none"
    store = _open_memo(path, read_only=False)
    try:
        gone = _memo_call(store, lambda: store.prune(unused_for=older_than, max_bytes=max_bytes))
        left = store.info()
    finally:
        store.close()
    deleted = count(gone, "entry", "entries")
    return f"{deleted} deleted ({limits}); {left.rows} left, {size(left.bytes)}"


def _prune_kv(
    folder: pathlib.Path, older_than: float | None, max_bytes: int | None, limits: str
) -> str:
    if not folder.is_dir():
        return "none"
    store = KVPrefixStore(folder)
    try:
        gone = store.prune(unused_for=older_than, max_bytes=max_bytes)
        total, left = store.total_bytes(), len(store.digests())
    finally:
        store.close()
    return f"{count(gone, 'file')} deleted ({limits}); {left} left, {size(total)}"


@cache_group.command("clear", short_help="Delete every entry (asks first, unless --yes).")
@_where
@_only
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def clear_command(
    memo_path: pathlib.Path | None, kv_dir: pathlib.Path | None, only: str | None, yes: bool
) -> int:
    """Delete every entry of the memo and every saved KV prefix (asks first, unless
    --yes)."""
    only = _only_store(memo_path, kv_dir, only)
    memo_path, kv_dir = _paths(memo_path, kv_dir)
    memo = memo_path if only != "kv" and memo_path.is_file() else None
    kv = kv_dir if only != "memo" and kv_dir.is_dir() else None
    if memo is None and kv is None:
        missing = [f"no memo at {memo_path}"] * (only != "kv") + [f"no KV folder at {kv_dir}"] * (
            only != "memo"
        )
        click.echo("nothing to clear: " + " and ".join(missing))
        return 0
    if not yes:
        what = " and ".join(
            [f"every entry of the memo {memo}"] * (memo is not None)
            + [f"every saved KV prefix in {kv}"] * (kv is not None)
        )
        click.confirm(f"Delete {what}?", abort=True, err=True)
    if memo is not None:
        store = _open_memo(memo, read_only=False)
        try:
            gone = _memo_call(store, store.clear)
        finally:
            store.close()
        click.echo(f"memo  {memo}: {count(gone, 'entry', 'entries')} deleted")
    if kv is not None:
        kv_store = KVPrefixStore(kv)
        try:
            gone = kv_store.clear()
        finally:
            kv_store.close()
        click.echo(f"kv    {kv}: {count(gone, 'file')} deleted")
    return 0


def _only_store(
    memo_path: pathlib.Path | None, kv_dir: pathlib.Path | None, only: str | None
) -> str | None:
    """Which store a destructive command works on: ``--only``'s, else the one whose
    path is given (naming one store's path is no request to touch the other's
    default), else both (``None``)."""
    if only is not None or (memo_path is None) == (kv_dir is None):
        return only
    return "memo" if memo_path is not None else "kv"


def _paths(
    memo_path: pathlib.Path | None, kv_dir: pathlib.Path | None
) -> tuple[pathlib.Path, pathlib.Path]:
    if memo_path is not None and kv_dir is not None:
        return memo_path, kv_dir
    home = spangraph_home()
    return memo_path or home / MEMO_NAME, kv_dir or home / KV_NAME


def _open_memo(path: pathlib.Path, *, read_only: bool) -> SQLiteStore:
    try:
        return SQLiteStore(path, read_only=read_only)
    except MemoStoreError as exc:
        fail(str(exc))


def _memo_call(store: SQLiteStore, call: Callable[[], int]) -> int:
    try:
        return call()
    except MemoStoreError as exc:
        fail(str(exc))
