"""Salesforce record and org Ids."""

from __future__ import annotations

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_UPPER_FLAGS = str.maketrans({ch: "1" if "A" <= ch <= "Z" else "0" for ch in _B62})


def case_safe_id(id15: str) -> str:
    """Append Salesforce's 3-character case-safe checksum to a 15-character Id."""
    # Per 5-character chunk, bit j is set when character j is upper case: read the flags backwards.
    flags = id15.translate(_UPPER_FLAGS)
    return id15 + "".join(
        _CHECKSUM[int(flags[start + 4 : start - 1 if start else None : -1], 2)] for start in (0, 5, 10)
    )


def org_id_of_session(session_id: str) -> str:
    """The 18-character org Id an access token belongs to: a token starts with the 15-character one."""
    return case_safe_id(session_id.split("!", 1)[0])
