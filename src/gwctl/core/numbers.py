"""Numbers read from TOML or JSON with the digits they were written with (money is never rounded by a float)."""

from __future__ import annotations


class ExactFloat(float):
    """A TOML or JSON number with a fraction or exponent, read as a float that keeps its text as written.

    Pass the class as ``parse_float`` to ``tomllib.loads`` / ``json.loads``: everything that wants a float
    gets one, and a price or budget reads :func:`float_text` instead of the float's nearest digits.
    """

    text: str

    def __new__(cls, text: str | float) -> ExactFloat:
        number = super().__new__(cls, text)
        # TOML allows 1_000.5; a float (pickle and copy pass one) is its shortest repr until its state is restored
        number.text = text.replace("_", "") if isinstance(text, str) else repr(float(text))
        return number


def float_text(value: float) -> str:
    """The digits a float was written with when it was read as an :class:`ExactFloat`, else its shortest repr."""
    return value.text if isinstance(value, ExactFloat) else repr(value)
