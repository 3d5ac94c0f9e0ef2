"""Read the elements of a JSON list one at a time, in bounded memory.

A COCO results file is one JSON list of detections, and can hold hundreds of thousands of them (tens
of megabytes): ``json.load`` would build every one as Python objects at once (about ten times the
file's size) before a single one can be checked or dropped. :func:`iter_json_list` reads the file in
chunks of :data:`CHUNK_CHARS` characters and yields each element as soon as it is complete (parsed
by the standard library's C scanner, so values are exactly those ``json.load`` gives, ``NaN`` and
``Infinity`` included); memory is one chunk plus the element being read, whatever the file's size.
An element larger than :data:`MAX_ELEMENT_CHARS` is refused (no detection is that large; a file
broken there would otherwise be read to its end into memory).

Problems raise :class:`JSONListError`, whose ``reason`` reads like ``json``'s own messages
(``Expecting ',' delimiter: line 3 (char 1234)``); :class:`NotAListError` when the top level is
another JSON value (its type name in ``kind``).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterator

__all__ = ["iter_json_list", "JSONListError", "NotAListError", "CHUNK_CHARS", "MAX_ELEMENT_CHARS"]

#: Characters read at a time.
CHUNK_CHARS = 1 << 20
#: Largest element accepted, in characters (a detection takes well under a kilobyte).
MAX_ELEMENT_CHARS = 16 << 20

_WS = re.compile(r"[ \t\n\r]*")
_KIND = {"{": "dict", '"': "str", "t": "bool", "f": "bool", "n": "NoneType"}


class JSONListError(ValueError):
    """The file is not valid JSON (``reason`` says where and why)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NotAListError(ValueError):
    """The top level is a JSON value other than a list; ``kind`` is its Python type name."""

    def __init__(self, kind: str):
        super().__init__(f"the top level is a {kind}, not a list")
        self.kind = kind


class _Reader:
    def __init__(self, f):
        self.f = f
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped before buf
        self.lines = 0  # newlines dropped before buf
        self.eof = False

    def more(self, want: int = 0) -> bool:
        """Append a chunk of at least ``want`` characters (dropping what lies before ``pos``); False at
        the end of the file."""
        if self.eof:
            return False
        chunk = self.f.read(max(want, CHUNK_CHARS))
        if not chunk:
            self.eof = True
            return False
        self.lines += self.buf.count("\n", 0, self.pos)
        self.base += self.pos
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def skip_ws(self) -> bool:
        """Move past white space; False when the file ends first."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return True
            if not self.more():
                return False

    def where(self, pos: int) -> str:
        return f"line {self.lines + self.buf.count(chr(10), 0, pos) + 1} (char {self.base + pos})"

    def fail(self, msg: str, pos: int = None) -> JSONListError:
        return JSONListError(f"{msg}: {self.where(self.pos if pos is None else pos)}")


def iter_json_list(f) -> Iterator[Any]:
    """The elements of the JSON list in the text file object ``f`` (opened for reading), one at a time.

    Raises :class:`NotAListError` when the top level is not a list, :class:`JSONListError` when the
    text is not valid JSON (after yielding the elements before the problem); reading errors of ``f``
    (``OSError``, ``UnicodeDecodeError``) pass through.
    """
    dec = json.JSONDecoder()
    r = _Reader(f)
    if not r.skip_ws():
        raise r.fail("Expecting value (the file is empty)")
    if r.buf[r.pos] == "\ufeff":  # a UTF-8 byte order mark: json.load refuses it, nothing is lost skipping it
        r.pos += 1
        if not r.skip_ws():
            raise r.fail("Expecting value")
    c = r.buf[r.pos]
    if c != "[":
        if c in _KIND:
            raise NotAListError(_KIND[c])
        if c in "-0123456789NI":
            raise NotAListError("number")
        raise r.fail("Expecting value")
    r.pos += 1
    if not r.skip_ws():
        raise r.fail("Expecting value or ']' (the file ends inside the list)")
    if r.buf[r.pos] == "]":
        r.pos += 1
    else:
        while True:
            while True:
                try:
                    obj, end = dec.raw_decode(r.buf, r.pos)
                except json.JSONDecodeError as e:
                    if len(r.buf) - r.pos > MAX_ELEMENT_CHARS:
                        raise r.fail(f"an element larger than {MAX_ELEMENT_CHARS} characters, or invalid JSON "
                                     f"({e.msg})", e.pos) from None
                    if r.more(len(r.buf) - r.pos):  # the element may go on in the next chunk
                        continue
                    raise r.fail(e.msg, e.pos) from None
                if end == len(r.buf) and r.more():  # a number may go on in the next chunk
                    continue
                break
            r.pos = end
            yield obj
            if not r.skip_ws():
                raise r.fail("Expecting ',' delimiter or ']' (the file ends inside the list)")
            c = r.buf[r.pos]
            if c == "]":
                r.pos += 1
                break
            if c != ",":
                raise r.fail("Expecting ',' delimiter")
            r.pos += 1
            if not r.skip_ws():
                raise r.fail("Expecting value (the file ends inside the list)")
    if r.skip_ws():
        raise r.fail("Extra data")


def json_safe(value: Any) -> Any:
    """``value`` made writable by :func:`json.dumps`: mappings (keys as strings), lists and tuples
    walked, numpy scalars turned into Python numbers, non-finite floats into ``None``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
