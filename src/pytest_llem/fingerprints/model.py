"""A model's fingerprint from its own files, not its path: a model rebuilt in another folder
with the same files has the same fingerprint.

Cheap enough for the pytest process: small files (config, tokenizer) are hashed whole; a
large file (weights) counts by its size and the digest of three 1 MiB samples (start,
middle, end), which any retraining or requantisation changes. Hub ids (not a local folder)
have no fingerprint here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pytest_llem.base.digests import json_digest

WHOLE_FILE_LIMIT = 16 * 1024 * 1024
SAMPLE_BYTES = 1024 * 1024


def model_fingerprint(model: str | None) -> str | None:
    """16 hex characters over every file's relative name, size and digest; None unless a local folder."""
    if not model:
        return None
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder)):
        try:
            files.append([path.relative_to(folder).as_posix(), path.stat().st_size, _file_digest(path)])
        except OSError:
            continue
    return json_digest(files) if files else None


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            digest.update(f.read())
        else:
            for offset in (0, size // 2, size - SAMPLE_BYTES):
                f.seek(offset)
                digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]
