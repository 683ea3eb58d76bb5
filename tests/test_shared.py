"""The dependency-free helpers every layer shares: the output cap and the error describer."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator

from sietch._util import Capped
from sietch.errors import describe_validation


def test_capped_keeps_the_limit_and_says_it_cut() -> None:
    """Capped keeps exactly ``limit`` bytes across chunks and notes only a real cut."""
    exact = Capped(6)
    for chunk in (b"abc", b"def"):
        exact(chunk)
    assert (bytes(exact.data), exact.truncated) == (b"abcdef", False)
    over = Capped(4)
    for chunk in (b"abc", b"def", b"ghi"):
        over(chunk)
    assert (bytes(over.data), over.truncated) == (b"abcd", True)


class _Body(BaseModel):
    vcpus: int = Field(ge=1)
    name: str

    @field_validator("name")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError(f"{value!r} has a space")
        return value


def test_describe_validation_names_each_field() -> None:
    """Each error reads ``field: message``, without pydantic's "Value error, " prefix."""
    with pytest.raises(ValidationError) as caught:
        _Body(vcpus=0, name="a b")
    text = describe_validation(caught.value.errors())
    assert text.startswith("vcpus: Input should be greater than or equal to 1; name: ")
    assert text.endswith("name: 'a b' has a space")


def test_describe_validation_drops_fastapis_body_and_counts_the_rest() -> None:
    """FastAPI's leading ``body`` is dropped, and errors past the limit are counted."""
    errors = [{"loc": ("body", f"f{i}"), "msg": "bad"} for i in range(7)]
    assert describe_validation(errors, limit=2) == "f0: bad; f1: bad (and 5 more)"
    assert describe_validation([{"loc": (), "msg": "Value error, whole body"}]) == "whole body"
