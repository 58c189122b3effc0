"""Reading a time written in any ISO-8601 / RFC 3339 form: one reader wherever the pipeline reads one.

:func:`parse_iso_instant` takes what ``datetime.fromisoformat`` takes on Python 3.11 (``T`` or any
one separator, ``Z`` or offsets ``+hh``/``+hhmm``/``+hh:mm``, a fraction of any length cut to
microseconds, ``,`` as decimal mark, the basic forms ``20200603T103348Z``, a date alone) and the
RFC 3339 spellings it does not: a lowercase ``z`` and a leap second (``23:59:60`` is read as
``23:59:59.999999``, the last instant the standard library can name). Leading and trailing
blanks are ignored. A naive result stays naive: the caller decides what a time without a zone
means (the seed's ``timestamp``: UTC; the sink's ``event_time``: refused).
"""

from __future__ import annotations

import re
from datetime import datetime

_LEAP_SECOND = re.compile(r"(\d\d:?\d\d:?)60(?!\d)")


def parse_iso_instant(text: str) -> datetime:
    """The instant ``text`` names; :class:`ValueError` when it is not an ISO-8601 time."""
    text = text.strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    fixed = text[:-1] + "Z" if text[-1:] == "z" else text
    fixed, leap = _LEAP_SECOND.subn(r"\g<1>59", fixed, count=1)
    if fixed == text:
        raise ValueError(f"not an ISO-8601 time: {text[:64]!r}")
    moment = datetime.fromisoformat(fixed)
    return moment.replace(microsecond=999_999) if leap else moment
