from __future__ import annotations

import math

from pytest_llem.base.digests import DIGEST_LENGTH, canonical_json, json_digest


def test_equal_values_serialise_equally_whatever_their_key_order_or_number_type():
    assert canonical_json({"b": 1.0, "a": [1, 2.0]}) == canonical_json({"a": (1, 2), "b": 1})
    assert canonical_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_rounding_noise_and_non_finite_numbers_are_tamed():
    assert canonical_json(0.1 + 0.2) == canonical_json(0.3)
    assert canonical_json([math.nan, math.inf]) == '["nan","inf"]'


def test_values_json_cannot_hold_become_their_text():
    assert canonical_json({1: object.__name__, "path": __import__("pathlib").Path("/x")}) == (
        '{"1":"object","path":"/x"}'
    )


def test_a_digest_is_short_hex_and_follows_the_value():
    digest = json_digest({"model": "m", "batch_size": 4})
    assert len(digest) == DIGEST_LENGTH and int(digest, 16) >= 0
    assert digest == json_digest({"batch_size": 4.0, "model": "m"})
    assert digest != json_digest({"model": "m", "batch_size": 8})
