"""Canonical JSON and its digests: equal values serialise, and so hash, equally.

Runs in every process: a config's hash (`config`), a model's fingerprint
(`fingerprints.model`), a prompt set's digest in the pytest process, and the worker's digest
of the tokens a serving load sent all hash the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

#: Hex digits kept of a SHA-256 digest: enough to tell configs and files apart.
DIGEST_LENGTH = 16
_FLOAT_SIGNIFICANT_DIGITS = 12


def _normalise(value: Any) -> Any:
    """Make equal configs serialise equally: 1.0 == 1, rounding noise and NaN/Inf tamed."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        rounded = float(f"{value:.{_FLOAT_SIGNIFICANT_DIGITS}g}")
        return int(rounded) if rounded.is_integer() else rounded
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def json_digest(value: Any) -> str:
    """SHA-256 (first 16 hex) of `value` as canonical JSON: equal values, equal digests."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()[:DIGEST_LENGTH]
