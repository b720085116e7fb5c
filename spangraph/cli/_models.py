"""``spangraph models``: the model files in ``$SPANGRAPH_HOME/models`` and the installed
model packages, with their sizes and checksum status. Loads no model."""

from __future__ import annotations

import pathlib

import click

from ._common import count, size, spangraph_home


@click.command("models", short_help="List model files and packages, sizes, checksums.")
@click.option(
    "--verify",
    is_flag=True,
    help="Hash every model file now (reads each whole file), rather than trust the record "
    "of its last check.",
)
def models_command(verify: bool) -> int:
    """List the model files in $SPANGRAPH_HOME/models and the installed model packages,
    with their sizes and checksum status.

    Exit status: 0, or 1 when a file does not match the sha256 it should have.
    """
    from ..engines import ModelFileError
    from ..engines._internal import MODELS, check_gguf, installed, model_digest

    folder = spangraph_home() / "models"
    packaged = [found for model in MODELS.values() if (found := installed(model)) is not None]
    expected = {p.file_name: p.sha256 for p in packaged}
    missing = [m for m in MODELS.values() if all(p.model is not m for p in packaged)]
    files = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    click.echo(f"{folder}: " + (count(len(files), "model file") if files else "no model files"))
    bad = 0
    for path in files:
        try:
            check_gguf(path)
            digest = model_digest(path, compute=verify)
        except (ModelFileError, OSError) as exc:
            click.echo(f"  {path.name}  {size(_size(path))}  unusable: {exc}")
            bad += 1
            continue
        want = expected.get(path.name)
        if digest is None:
            status = "sha256 not checked yet (--verify checks it)"
        elif want is None:
            status = f"sha256 {digest}" + (" (hashed now)" if verify else " (recorded)")
        elif digest == want:
            status = "sha256 ok: the packaged model's" + (" (hashed now)" if verify else "")
        else:
            status = f"sha256 MISMATCH: {digest}, expected {want} (delete it: it is made again)"
            bad += 1
        click.echo(f"  {path.name}  {size(_size(path))}  {status}")
    click.echo("packaged models (LlamaCppEngine(model=NAME)):")
    for p in packaged:
        where = folder / p.file_name
        state = (
            f"placed in {where}"
            if where.is_file()
            else "not placed yet (the embedded engine places it on its first use)"
        )
        kind = "chat template" if p.model.chat else "base model, no chat template"
        broken = "" if p.complete else "; its files are missing: reinstall the package"
        click.echo(
            f"  {p.model.name} ({kind}): {p.model.distribution} {p.version}, {p.file_name}, "
            f"sha256 {p.sha256}; {state}{broken}"
        )
        bad += not p.complete
    for m in missing:
        click.echo(f"  {m.name}: not installed ({m.install})")
    return 1 if bad else 0


def _size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
