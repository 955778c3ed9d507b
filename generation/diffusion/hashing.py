"""A model directory's content hash: its identity in PNGs, the registry and the A1111 API.

A diffusers directory has no single checkpoint file whose SHA-256 A1111 could show, so ldmsite's
digest is a sha256 over the directory's files (each file's relative path and its own sha256, in
path order; see :func:`directory_content_hash`). Its first 10 hex digits are the "Model hash" in
every PNG's parameters, the ``hash`` of ``/sdapi/v1/sd-models``, ``sd_model_hash`` in txt2img's
``info``; the whole digest is sd-models' ``sha256`` and options' ``sd_checkpoint_hash``.

Only hashlib and the filesystem: no torch, so the registry can record the built-in model's
hash on every ``migrate`` without loading its weights.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from .request import MODEL_DEFAULTS_FILE

NOT_HASHED_FOLDERS = {"safety_checker", "feature_extractor", ".git", ".cache", ".huggingface"}
# Defaults decide what a request that leaves fields out asks for, never what a given request
# makes, so tuning them keeps the hash (and the "Model hash" of every earlier image); the same
# goes for a model card or other documentation (*.md) anywhere in the directory.
NOT_HASHED_ROOT_FILES = {MODEL_DEFAULTS_FILE}
NOT_HASHED_SUFFIXES = (".md",)
SHORT_HASH_DIGITS = 10  # AUTOMATIC1111's short "Model hash"

_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}
_FILE_HASHES_LOCK = threading.Lock()


def file_sha256(path: Path, start: int = 0) -> str:
    """The sha256 of a file from byte ``start`` on, memoised by (path, size, mtime, start): reloading
    a model does not re-read gigabytes."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, start)
    with _FILE_HASHES_LOCK:
        cached = _FILE_HASHES.get(key)
    if cached:
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(start)
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _FILE_HASHES_LOCK:
        _FILE_HASHES[key] = value
    return value


def directory_content_hash(path: str | Path) -> str:
    """sha256 over every file (relative path and content) that determines the model's output.

    Safety checker, feature extractor and VCS folders, hidden files, documentation (``*.md``) and
    the defaults file (``ldmsite_defaults.json``) are left out.
    """
    root = Path(path)
    digest = hashlib.sha256()
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in NOT_HASHED_FOLDERS and not d.startswith("."))
        for filename in filenames:
            if filename.startswith(".") or filename.endswith(NOT_HASHED_SUFFIXES) or (
                    dirpath == str(root) and filename in NOT_HASHED_ROOT_FILES):
                continue
            files.append(Path(dirpath) / filename)
    for file in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(file_sha256(file).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def short_hash(content_hash: str) -> str:
    """The first 10 hex digits, like AUTOMATIC1111's "Model hash"."""
    return content_hash[:SHORT_HASH_DIGITS]
