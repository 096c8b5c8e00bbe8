"""ETF, the Erlang External Term Format (docs/protocol.md §10.1), written for Discord's payloads.

Decoding follows Discord's own erlpack where the format leaves a choice:

* atoms ``nil`` and ``null`` become ``None``, ``true`` / ``false`` become booleans, every
  other atom becomes ``str``; as a map *key* every atom is its name (``str``), as in erlpack's
  JavaScript objects, so ``true`` as a key is ``"true"``;
* binaries become ``str`` (UTF-8; a binary that is not valid UTF-8 is a :class:`DecodeError`,
  as it would be in a JSON message);
* NIL_EXT is ``[]``, STRING_EXT (Erlang's compact form of a list of small integers) is a
  ``list`` of ``int`` — exactly the list that was encoded;
* tuples become ``list`` (erlpack gives arrays);
* maps become ``dict``; keys may be binaries, atoms, integers or floats (a list, tuple or map
  as a key is a :class:`DecodeError`); a repeated key keeps the last value, as JSON does;
* old (FLOAT_EXT) and new (NEW_FLOAT_EXT) floats become ``float``; infinities and NaN, which
  Erlang cannot represent, are a :class:`DecodeError`;
* a COMPRESSED term (only valid as the whole message, right after the version byte) is
  inflated with an output bound: its declared size must be at most ``max_inflated_size`` and
  the inflated data must be exactly that size.

Everything else is a :class:`DecodeError`: other tags (pids, refs, funs, bit binaries…),
improper lists, input that ends early or has bytes after the term, and nesting deeper than
:data:`MAX_DEPTH`. No declared length is trusted before it is compared with the input left,
so a hostile length never allocates.

Encoding writes what Discord accepts and what erlpack's decoders read — erlpack is Discord's
own ETF library, and Discord-compatible servers decode with it, so every form written here
must be one erlpack reads: ``dict`` → MAP_EXT with binary keys only (never atoms: atom keys
close the connection with 4002), ``str`` → BINARY_EXT, ``list``/``tuple`` → LIST_EXT
(NIL_EXT when empty), ``bool`` → atom ``true``/``false`` and ``None`` → atom ``nil``, both
as SMALL_ATOM_EXT (erlpack's JavaScript decoder reads ATOM_EXT and SMALL_ATOM_EXT only, and
closes 4002 on SMALL_ATOM_UTF8_EXT; Erlang reads both), ``int`` → the smallest of
SMALL_INTEGER_EXT, INTEGER_EXT and SMALL_BIG_EXT, ``float`` → NEW_FLOAT_EXT. It never writes
a compressed term. Integers are bounded to 64 bits of magnitude (``-(2**64 - 1)`` to
``2**64 - 1``, every snowflake): erlpack's decoders refuse wider SMALL_BIG_EXT/LARGE_BIG_EXT
terms ("big ints larger than 8 bytes") and its encoders cannot write them. Anything else
(non-string keys, integers past 64 bits, non-finite floats, lone surrogates, other types,
nesting deeper than :data:`MAX_DEPTH`) raises :class:`LocalProtocolError`. The decoder still
reads every integer width and all four atom forms, whoever wrote them.

The optional ``erlpack`` package is not used: its Python decoder returns ``bytes`` and
``tuple`` where erlpack's JavaScript (what Discord documents) gives strings and arrays, does
not map ``null``, keeps invalid UTF-8 as bytes, and inflates compressed terms without a
bound, so it cannot give identical results. It would not be faster either: erlpack 1.0.1's
decoder is Python-level code compiled by Cython, slower than this one on
``bench/bench_decode.py``'s stream before any post-pass; it also accepts trailing bytes and
cut-short binaries, and deep nesting (100,000 lists) crashes the interpreter.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from typing import Any, Final

from .._errors import DecodeError, LocalProtocolError, MessageTooLarge
from ._zlib import inflate

#: Containers nested deeper than this are refused (decode: DecodeError; encode:
#: LocalProtocolError). Discord's payloads nest about ten levels; 128 keeps the compiled
#: decoder (about 650 bytes of C stack a level, see setup.py) within a 128 KiB thread stack.
MAX_DEPTH: Final = 128
#: Default bound on the inflated size of a COMPRESSED term (the config's default
#: ``max_message_size``).
DEFAULT_MAX_INFLATED_SIZE: Final = 64 * 1024 * 1024
#: How many distinct map keys one codec remembers (see ``_make_term_decoder``).
KEY_CACHE_SIZE: Final = 2048

VERSION: Final = 131
COMPRESSED: Final = 80
NEW_FLOAT_EXT: Final = 70
SMALL_INTEGER_EXT: Final = 97
INTEGER_EXT: Final = 98
FLOAT_EXT: Final = 99
ATOM_EXT: Final = 100
SMALL_TUPLE_EXT: Final = 104
LARGE_TUPLE_EXT: Final = 105
NIL_EXT: Final = 106
STRING_EXT: Final = 107
LIST_EXT: Final = 108
BINARY_EXT: Final = 109
SMALL_BIG_EXT: Final = 110
LARGE_BIG_EXT: Final = 111
SMALL_ATOM_EXT: Final = 115
MAP_EXT: Final = 116
ATOM_UTF8_EXT: Final = 118
SMALL_ATOM_UTF8_EXT: Final = 119

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_f64 = struct.Struct(">d").unpack_from

#: The decoder reads a few bytes ahead of a map key (see ``_make_term_decoder``); the
#: input is padded so such reads stay inside it. Nothing reads the padding as a term
#: without the final offset check seeing it.
_PADDING: Final = bytes(8)
_MISSING: Final = object()


def _special_atoms() -> dict[bytes, Any]:
    """Every encoding (tag and length included) of the atoms that are not strings."""
    table: dict[bytes, Any] = {}
    for name, value in ((b"nil", None), (b"null", None), (b"true", True), (b"false", False)):
        size = len(name)
        for prefix in (
            bytes((SMALL_ATOM_EXT, size)),
            bytes((SMALL_ATOM_UTF8_EXT, size)),
            bytes((ATOM_EXT, 0, size)),
            bytes((ATOM_UTF8_EXT, 0, size)),
        ):
            table[prefix + name] = value
    return table


#: ``raw atom term -> value`` for nil, null, true and false in all four atom forms.
_SPECIAL_ATOMS: Final = _special_atoms()
#: What Erlang's ``%.20e`` writes (and a little more: any plain decimal float).
_FLOAT_TEXT = re.compile(rb"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")

#: Tags a map key may have besides binaries and atoms: scalars, which are hashable.
_SCALAR_KEY_TAGS: Final = frozenset(
    {SMALL_INTEGER_EXT, INTEGER_EXT, SMALL_BIG_EXT, LARGE_BIG_EXT, NEW_FLOAT_EXT, FLOAT_EXT}
)
_CONTAINER_TAGS: Final = frozenset(
    {MAP_EXT, LIST_EXT, NIL_EXT, STRING_EXT, SMALL_TUPLE_EXT, LARGE_TUPLE_EXT}
)
_TAG_NAMES: Final = {
    77: "BIT_BINARY_EXT",
    82: "ATOM_CACHE_REF",
    88: "NEW_PID_EXT",
    89: "NEW_PORT_EXT",
    90: "NEWER_REFERENCE_EXT",
    101: "REFERENCE_EXT",
    102: "PORT_EXT",
    103: "PID_EXT",
    112: "NEW_FUN_EXT",
    113: "EXPORT_EXT",
    114: "NEW_REFERENCE_EXT",
    117: "FUN_EXT",
    120: "V4_PORT_EXT",
    121: "LOCAL_EXT",
}


class _Invalid(Exception):
    """Raised inside the decoder; ``loads`` turns it into :class:`DecodeError`.

    ``offset`` is where the problem was found: at or past the end of the real input it
    means the input was cut short (the decoder was reading the padding).
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def _unknown_tag(tag: int, pos: int) -> _Invalid:
    if tag == COMPRESSED:
        return _Invalid(
            f"a compressed term is only allowed as the whole message (offset {pos})", pos
        )
    name = _TAG_NAMES.get(tag)
    what = f"unsupported term {name} (tag {tag})" if name else f"unknown tag {tag}"
    return _Invalid(f"{what} at offset {pos}", pos)


def _too_deep(pos: int) -> _Invalid:
    return _Invalid(f"terms nested more than {MAX_DEPTH} levels deep (offset {pos})", pos)


def _atom_name(data: bytes, start: int, end: int, tag: int) -> Any:
    """The value of the atom whose name is ``data[start:end]`` and whose tag is ``tag``."""
    value = _SPECIAL_ATOMS.get(data[start - (3 if tag in (100, 118) else 2) : end], _MISSING)
    if value is _MISSING:
        return data[start:end].decode("latin-1" if tag in (100, 115) else "utf-8")
    return value


def _bignum(data: bytes, start: int, size: int) -> int:
    # The sign byte is at ``start``; Erlang reads any non-zero sign as negative.
    value = int.from_bytes(data[start + 1 : start + 1 + size], "little")
    return -value if data[start] else value


def _old_float(data: bytes, pos: int) -> float:
    """FLOAT_EXT: 31 bytes of ``%.20e`` text, NUL-padded, starting at ``pos``."""
    text = data[pos : pos + 31].split(b"\0", 1)[0]
    if _FLOAT_TEXT.fullmatch(text) is None:
        raise _Invalid(f"malformed FLOAT_EXT at offset {pos - 1}", pos - 1)
    value = float(text)
    if value - value != 0.0:
        raise _Invalid(f"FLOAT_EXT out of range at offset {pos - 1}", pos - 1)
    return value


_TermDecoder = Callable[[bytes, int, int], tuple[Any, int]]


def _make_term_decoder(keys: dict[bytes, str]) -> _TermDecoder:
    """Build ``term(data, pos, depth) -> (value, next_pos)`` around the key cache ``keys``.

    Speed (docs/protocol.md §10.1 payloads are mostly maps with binary keys): map keys repeat, so
    ``keys`` maps the whole key term (tag, 4-byte length, UTF-8 bytes) of every short binary
    key seen so far to its ``str``. A key is looked up by slicing ``data[pos : pos + 5 +
    data[pos + 4]]``: if that slice is a cached key term, it *is* that term (the cached term
    includes its tag and exact length), whatever the byte at ``pos + 4`` meant; on a miss
    the key is decoded the slow way. The common leaf terms in maps and lists are decoded
    inline, without a call.

    Reads past the end raise IndexError or struct.error; a binary or bignum that runs past
    the end yields an offset past the end, which ``loads`` reports (it checks the final
    offset, and positions only grow).
    """
    keys_get = keys.get
    atoms_get = _SPECIAL_ATOMS.get
    u32 = _u32
    missing = _MISSING
    from_bytes = int.from_bytes

    def slow_key(data: bytes, pos: int) -> tuple[Any, int]:
        """A map key that is not in the cache: binary, atom (its name) or scalar."""
        tag = data[pos]
        if tag == 109:  # BINARY_EXT
            start = pos + 5
            end = start + u32(data, pos + 1)[0]
            raw = data[pos:end]
            key = raw[5:].decode()
            if end - start < 256 and len(raw) == end - pos and len(keys) < KEY_CACHE_SIZE:
                keys[raw] = key
            return key, end
        if tag in (115, 119):  # SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
            end = pos + 2 + data[pos + 1]
            return data[pos + 2 : end].decode("utf-8" if tag == 119 else "latin-1"), end
        if tag in (100, 118):  # ATOM_EXT, ATOM_UTF8_EXT
            end = pos + 3 + _u16(data, pos + 1)[0]
            return data[pos + 3 : end].decode("utf-8" if tag == 118 else "latin-1"), end
        if tag in _SCALAR_KEY_TAGS:
            return term(data, pos, MAX_DEPTH)
        if tag in _CONTAINER_TAGS:
            raise _Invalid(f"a map key at offset {pos} is a list, tuple or map", pos)
        raise _unknown_tag(tag, pos)

    def term(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
        tag = data[pos]
        if tag == 116:  # MAP_EXT
            count = u32(data, pos + 1)[0]
            if count > (len(data) - pos) >> 1:
                raise _Invalid(f"a map of {count} pairs at offset {pos} runs past the end", pos)
            if depth >= MAX_DEPTH:
                raise _too_deep(pos)
            depth += 1
            pos += 5
            result: dict[Any, Any] = {}
            for _ in range(count):
                end = pos + 5 + data[pos + 4]
                key: Any = keys_get(data[pos:end])
                if key is None:
                    key, pos = slow_key(data, pos)
                else:
                    pos = end
                tag = data[pos]
                if tag == 109:  # BINARY_EXT
                    start = pos + 5
                    pos = start + u32(data, pos + 1)[0]
                    result[key] = data[start:pos].decode()
                elif tag in (115, 119):  # SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
                    end = pos + 2 + data[pos + 1]
                    value = atoms_get(data[pos:end], missing)
                    if value is missing:
                        value = _atom_name(data, pos + 2, end, tag)
                    result[key] = value
                    pos = end
                elif tag == 97:  # SMALL_INTEGER_EXT
                    result[key] = data[pos + 1]
                    pos += 2
                elif tag == 106:  # NIL_EXT
                    result[key] = []
                    pos += 1
                elif tag == 110:  # SMALL_BIG_EXT (a snowflake as an integer)
                    start = pos + 3
                    end = start + data[pos + 1]
                    number = from_bytes(data[start:end], "little")
                    result[key] = -number if data[pos + 2] else number
                    pos = end
                else:
                    result[key], pos = term(data, pos, depth)
            return result, pos
        if tag == 109:  # BINARY_EXT
            start = pos + 5
            end = start + u32(data, pos + 1)[0]
            return data[start:end].decode(), end
        if tag in (108, 104, 105):  # LIST_EXT, SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
            header = pos
            if tag == 104:  # SMALL_TUPLE_EXT
                count = data[pos + 1]
                pos += 2
            else:
                count = u32(data, pos + 1)[0]
                pos += 5
            if count > len(data) - pos:
                raise _Invalid(f"{count} elements at offset {header} run past the end", header)
            if depth >= MAX_DEPTH:
                raise _too_deep(header)
            depth += 1
            items: list[Any] = []
            append = items.append
            for _ in range(count):
                kind = data[pos]
                if kind == 109:  # BINARY_EXT
                    start = pos + 5
                    pos = start + u32(data, pos + 1)[0]
                    append(data[start:pos].decode())
                elif kind == 97:  # SMALL_INTEGER_EXT
                    append(data[pos + 1])
                    pos += 2
                else:
                    item, pos = term(data, pos, depth)
                    append(item)
            if tag == 108:  # LIST_EXT: the tail must be NIL_EXT
                if data[pos] != 106:
                    raise _Invalid(f"an improper list: its tail at offset {pos} is not []", pos)
                pos += 1
            return items, pos
        if tag in (115, 119):  # SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
            end = pos + 2 + data[pos + 1]
            return _atom_name(data, pos + 2, end, tag), end
        if tag == 97:  # SMALL_INTEGER_EXT
            return data[pos + 1], pos + 2
        if tag == 106:  # NIL_EXT
            return [], pos + 1
        if tag in (100, 118):  # ATOM_EXT, ATOM_UTF8_EXT
            end = pos + 3 + _u16(data, pos + 1)[0]
            return _atom_name(data, pos + 3, end, tag), end
        if tag == 110:  # SMALL_BIG_EXT
            size = data[pos + 1]
            return _bignum(data, pos + 2, size), pos + 3 + size
        if tag == 98:  # INTEGER_EXT
            return _i32(data, pos + 1)[0], pos + 5
        if tag == 70:  # NEW_FLOAT_EXT
            value = _f64(data, pos + 1)[0]
            if value - value != 0.0:
                raise _Invalid(f"a NaN or infinite float at offset {pos}", pos)
            return value, pos + 9
        if tag == 107:  # STRING_EXT: a list of small integers
            end = pos + 3 + _u16(data, pos + 1)[0]
            return list(data[pos + 3 : end]), end
        if tag == 111:  # LARGE_BIG_EXT
            size = u32(data, pos + 1)[0]
            return _bignum(data, pos + 5, size), pos + 6 + size
        if tag == 99:  # FLOAT_EXT
            return _old_float(data, pos + 1), pos + 32
        raise _unknown_tag(tag, pos)

    return term


def _inflate(data: bytes | bytearray, limit: int) -> bytes | bytearray:
    """Inflate the COMPRESSED message ``data`` (131, 80, size, zlib data) within ``limit``.

    The declared size is checked against ``limit`` before anything is inflated, and the
    inflater stops one step past the declared size, so a bomb costs about ``limit`` bytes.
    """
    size = _u32(data, 2)[0]
    if size > limit:
        raise _Invalid(f"a compressed term declares {size} bytes; the bound is {limit}", 1)
    inflater = zlib.decompressobj()
    try:
        # In bounded steps (as zlib-stream): the peak is about the declared size, not twice it.
        inflated = inflate(inflater, data[6:], size)
    except zlib.error as exc:
        raise _Invalid(f"the compressed term is not valid zlib data ({exc})", 6) from None
    except MessageTooLarge:
        raise _Invalid(
            f"a compressed term inflates to more than its declared {size} bytes", 6
        ) from None
    if not inflater.eof:
        raise _Invalid("the compressed term's zlib stream is cut short", len(data))
    if len(inflated) < size:
        raise _Invalid(
            f"a compressed term inflates to {len(inflated)} bytes, not its declared {size}", 6
        )
    if inflater.unused_data:
        raise _Invalid(f"{len(inflater.unused_data)} bytes follow the compressed term", 6)
    return inflated


# -- encoding ----------------------------------------------------------------------------

_binary_header = struct.Struct(">BI").pack
_integer = struct.Struct(">Bi").pack
_new_float = struct.Struct(">Bd").pack
# SMALL_ATOM_EXT, as erlpack writes them (its JavaScript decoder reads no other small atom).
_ATOM_TRUE: Final = bytes((SMALL_ATOM_EXT, 4)) + b"true"
_ATOM_FALSE: Final = bytes((SMALL_ATOM_EXT, 5)) + b"false"
_ATOM_NIL: Final = bytes((SMALL_ATOM_EXT, 3)) + b"nil"
#: The widest integer written (magnitude): erlpack decodes SMALL_BIG_EXT of up to 8 bytes.
MAX_ENCODED_INT: Final = (1 << 64) - 1


def _put_int(value: int, out: bytearray) -> None:
    if 0 <= value <= 255:
        out.append(SMALL_INTEGER_EXT)
        out.append(value)
    elif -0x80000000 <= value <= 0x7FFFFFFF:
        out += _integer(INTEGER_EXT, value)
    else:
        magnitude = -value if value < 0 else value
        if magnitude > MAX_ENCODED_INT:
            # Checked before anything is converted: no cost for a 5,000-digit value.
            raise LocalProtocolError(
                f"ETF integers are limited to 64 bits (erlpack decodes no wider); got one of "
                f"{magnitude.bit_length()} bits"
            )
        size = (magnitude.bit_length() + 7) >> 3
        out += bytes((SMALL_BIG_EXT, size, value < 0))
        out += magnitude.to_bytes(size, "little")


def _put(obj: Any, out: bytearray, depth: int) -> None:
    """Append the encoding of ``obj`` (without the version byte) to ``out``."""
    kind = type(obj)
    if kind is str:
        raw = obj.encode()
        out += _binary_header(BINARY_EXT, len(raw))
        out += raw
    elif kind is dict:
        if depth >= MAX_DEPTH:
            raise LocalProtocolError(f"payload nested more than {MAX_DEPTH} levels deep")
        depth += 1
        out += _binary_header(MAP_EXT, len(obj))
        for key, value in obj.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise LocalProtocolError(
                        f"ETF map keys must be strings (Discord refuses others); got {key!r}"
                    )
                key = str.__str__(key)  # noqa: PLW2901 - a str subclass such as a StrEnum
            raw = key.encode()
            out += _binary_header(BINARY_EXT, len(raw))
            out += raw
            if type(value) is str:
                raw = value.encode()
                out += _binary_header(BINARY_EXT, len(raw))
                out += raw
            else:
                _put(value, out, depth)
    elif kind is int:
        _put_int(obj, out)
    elif kind is list or kind is tuple:
        if not obj:
            out.append(NIL_EXT)
            return
        if depth >= MAX_DEPTH:
            raise LocalProtocolError(f"payload nested more than {MAX_DEPTH} levels deep")
        depth += 1
        out += _binary_header(LIST_EXT, len(obj))
        for item in obj:
            _put(item, out, depth)
        out.append(NIL_EXT)
    elif obj is None:
        out += _ATOM_NIL
    elif obj is True:
        out += _ATOM_TRUE
    elif obj is False:
        out += _ATOM_FALSE
    elif kind is float:
        if obj - obj != 0.0:
            raise LocalProtocolError(f"ETF cannot carry the float {obj!r}")
        out += _new_float(NEW_FLOAT_EXT, obj)
    # Subclasses (IntEnum, IntFlag, StrEnum, OrderedDict…) encode as their base type.
    elif isinstance(obj, bool):  # pragma: no cover - bool cannot be subclassed
        _put(bool(obj), out, depth)
    elif isinstance(obj, int):
        _put_int(int.__index__(obj), out)
    elif isinstance(obj, str):
        _put(str.__str__(obj), out, depth)
    elif isinstance(obj, float):
        _put(float.__float__(obj), out, depth)
    elif isinstance(obj, dict):
        _put(dict(obj), out, depth)
    elif isinstance(obj, list | tuple):
        _put(list(obj), out, depth)
    else:
        raise LocalProtocolError(f"ETF cannot encode an object of type {kind.__name__}")


class EtfCodec:
    """Encode payloads to ETF bytes; decode ETF messages (see the module docstring).

    ``max_inflated_size`` bounds what a COMPRESSED term may inflate to; the connection
    passes its ``max_message_size``. One codec serves one connection: it remembers up to
    :data:`KEY_CACHE_SIZE` map keys to decode them faster.
    """

    __slots__ = ("_max_inflated_size", "_term")

    def __init__(self, max_inflated_size: int = DEFAULT_MAX_INFLATED_SIZE) -> None:
        self._max_inflated_size = max_inflated_size
        self._term = _make_term_decoder({})

    def dumps(self, payload: Any) -> bytes:
        """Encode ``payload``; raise :class:`LocalProtocolError` for what ETF cannot carry."""
        out = bytearray((VERSION,))
        try:
            _put(payload, out, 0)
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"a string is not valid Unicode text: {exc}") from None
        except (struct.error, OverflowError) as err:  # not `exc`: see loads
            raise LocalProtocolError(f"a value is too large for ETF: {err}") from None
        except RecursionError:
            raise LocalProtocolError("payload nested too deeply for the interpreter") from None
        return bytes(out)

    def loads(self, data: str | bytes | bytearray | memoryview) -> Any:
        """Decode one whole ETF message; raise :class:`DecodeError` if it is not one."""
        if type(data) is not bytes:
            if isinstance(data, str):
                raise DecodeError("invalid ETF: ETF arrives in binary messages, not text")
            if type(data) is not bytearray:
                data = bytes(data)
        size = len(data)
        try:
            if size < 2:
                raise _Invalid("the message is too short", size)
            if data[0] != VERSION:
                raise _Invalid(f"the version byte is {data[0]}, not {VERSION}", 0)
            if data[1] == COMPRESSED:
                inflated = _inflate(data, self._max_inflated_size)
                size = len(inflated)
                value, end = self._term(b"".join((inflated, _PADDING)), 0, 0)
            else:
                # One padded copy; a bytearray (a large inflated message) is joined, not
                # copied to bytes first.
                padded = data + _PADDING if type(data) is bytes else b"".join((data, _PADDING))
                value, end = self._term(padded, 1, 0)
        except _Invalid as exc:
            if exc.offset >= size:
                raise DecodeError("invalid ETF: the message ends inside a term") from None
            raise DecodeError(f"invalid ETF: {exc}") from None
        except (IndexError, struct.error):
            raise DecodeError("invalid ETF: the message ends inside a term") from None
        except UnicodeDecodeError as err:  # not `exc`: a compiled build types names by clause
            raise DecodeError(f"invalid ETF: a binary or atom is not valid UTF-8 ({err})") from None
        except RecursionError:
            raise DecodeError("invalid ETF: terms nested too deeply for the interpreter") from None
        if end != size:
            if end > size:
                raise DecodeError("invalid ETF: the message ends inside a term")
            extra = size - end
            raise DecodeError(
                f"invalid ETF: {extra} trailing byte{'s' * (extra > 1)} after the term"
            )
        return value
