"""The Secret wrapper: masked in every printed form, plaintext only on request."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest

from config import MASK, Resolved, Secret, json_default
from config._model import DEFAULT

PLAINTEXT = "s3cr3t-plaintext-value"


# `%` is what logging applies to its arguments.
PERCENT = "%s"


@pytest.mark.parametrize(
    "render",
    [str, repr, "{}".format, "{:>30}".format, lambda v: f"{v!s}", PERCENT.__mod__],
)
def test_secret_renders_masked(render) -> None:
    text = render(Secret(PLAINTEXT))

    assert PLAINTEXT not in text
    assert MASK in text


def test_secret_json_masked() -> None:
    text = json.dumps({"password": Secret(PLAINTEXT)}, default=json_default)

    assert text == json.dumps({"password": MASK})


def test_secret_reveal_returns_plaintext() -> None:
    assert Secret(PLAINTEXT).reveal() == PLAINTEXT


def test_secret_copies_stay_masked() -> None:
    secret = Secret(PLAINTEXT)
    record = Resolved("REDIS_PASSWORD", secret, True, DEFAULT)

    assert copy.copy(secret) is secret
    assert copy.deepcopy(secret) is secret
    assert dataclasses.asdict(record)["value"] is secret
    assert PLAINTEXT not in repr(copy.deepcopy(record))


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(PLAINTEXT))


def test_secret_is_immutable() -> None:
    secret = Secret(PLAINTEXT)

    with pytest.raises(AttributeError):
        secret._value = "other"  # type: ignore[misc]
    assert secret.reveal() == PLAINTEXT


def test_secret_equality_by_value() -> None:
    assert Secret(PLAINTEXT) == Secret(PLAINTEXT)
    assert Secret(PLAINTEXT) != Secret("other")
    assert Secret(PLAINTEXT) != PLAINTEXT
