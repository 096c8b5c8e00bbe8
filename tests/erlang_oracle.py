"""Erlang/OTP as an oracle for the ETF codec (docs/protocol.md §10.1): one long-lived ``erl`` process.

The Erlang side is a small loop passed with ``-eval``. It talks over two pipes it inherits
as extra file descriptors (requests and replies), framed with a 4-byte big-endian length
(``{packet, 4}``), so nothing Erlang prints on its own stdout can corrupt the protocol.

Requests (first byte):

* ``R`` + ETF bytes: ``binary_to_term(Bytes, [used])``. Erlang must read the whole input.
* ``E`` + Erlang source text of one expression: evaluate it (to build terms that Python
  cannot describe, such as atom keys, tuples or latin-1 atoms).

Reply to both: ``o``, then ``Used`` (4 bytes; 0 for ``E``), then length-prefixed fields:
the term's *rendering* (below) followed by ``term_to_binary(Term, Opts)`` for each entry of
:data:`ENCODINGS`, in order. On failure: ``x`` + the Erlang error text.

The rendering is a canonical text that does not use ETF at all, so checking it against
:func:`render` of the intended Python value tests our *encoder* independently of our
decoder: ``i<int>;`` for integers, ``f<IEEE-754 bits as an unsigned int>;`` for floats,
``b<size>:<bytes>`` for binaries, ``a<size>:<UTF-8 name>`` for atoms, ``l<n>:...`` for lists
(strings are lists), ``t<n>:...`` for tuples and ``m<n>:...`` for maps, whose pairs (key
rendering followed by value rendering) are sorted bytewise (renderings are prefix-free, so
this orders by key); anything else (pids, improper lists...) renders as ``?...``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from typing import Any

#: The options of each ``term_to_binary`` call in a reply, in order.
ENCODINGS: tuple[str, ...] = (
    "[]",
    "[compressed]",
    "[{minor_version, 0}]",
    "[{minor_version, 2}]",
    "[{compressed, 9}, {minor_version, 2}]",
)

_ERLANG = r"""
Render = fun R(T) when is_integer(T) -> [$i, integer_to_binary(T), $;];
             R(T) when is_float(T) -> <<Bits:64>> = <<T/float>>, [$f, integer_to_binary(Bits), $;];
             R(T) when is_binary(T) -> [$b, integer_to_binary(byte_size(T)), $:, T];
             R(T) when is_atom(T) ->
                 A = atom_to_binary(T, utf8), [$a, integer_to_binary(byte_size(A)), $:, A];
             R(T) when is_list(T) ->
                 case catch length(T) of
                     N when is_integer(N) -> [$l, integer_to_binary(N), $:, [R(E) || E <- T]];
                     _ -> <<"?improper">>
                 end;
             R(T) when is_tuple(T) ->
                 [$t, integer_to_binary(tuple_size(T)), $:, [R(E) || E <- tuple_to_list(T)]];
             R(T) when is_map(T) ->
                 Pairs = lists:sort([iolist_to_binary([R(K), R(V)]) || {K, V} <- maps:to_list(T)]),
                 [$m, integer_to_binary(map_size(T)), $:, Pairs];
             R(_) -> <<"?other">>
         end,
Opts = [%(encodings)s],
Field = fun(X) -> B = iolist_to_binary(X), [<<(byte_size(B)):32>>, B] end,
Reply = fun(T, Used) ->
            [$o, <<Used:32>>, Field(Render(T)) | [Field(term_to_binary(T, O)) || O <- Opts]]
        end,
Eval = fun(Src) ->
           {ok, Toks, _} = erl_scan:string(unicode:characters_to_list(Src)),
           {ok, Exprs} = erl_parse:parse_exprs(Toks),
           {value, V, _} = erl_eval:exprs(Exprs, []),
           V
       end,
Handle = fun(<<$R, Bin/binary>>) -> {T, Used} = binary_to_term(Bin, [used]), Reply(T, Used);
            (<<$E, Src/binary>>) -> Reply(Eval(Src), 0)
         end,
Port = open_port({fd, %(req)d, %(rep)d}, [binary, {packet, 4}, eof]),
Loop = fun L() ->
           receive
               {Port, {data, Req}} ->
                   Out = try Handle(Req)
                         catch C:E -> [$x, io_lib:format("~p:~p", [C, E])]
                         end,
                   port_command(Port, Out),
                   L();
               {Port, eof} -> halt(0)
           end
       end,
Loop().
"""


class ErlangError(Exception):
    """Erlang refused a request (for example ``binary_to_term`` raised badarg)."""


def erl_path() -> str | None:
    """The ``erl`` executable, or ``None`` when Erlang/OTP is not installed."""
    return shutil.which("erl")


class ErlangOracle:
    """One ``erl -noshell`` process answering requests until :meth:`close`."""

    def __init__(self, erl: str) -> None:
        req_read, self._req_write = os.pipe()
        self._rep_read, rep_write = os.pipe()
        # The child inherits both pipe ends under the same numbers.
        source = _ERLANG % {
            "encodings": ", ".join(ENCODINGS),
            "req": req_read,
            "rep": rep_write,
        }
        self._proc = subprocess.Popen(
            [erl, "-noshell", "-noinput", "-eval", source],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(req_read, rep_write),
        )
        os.close(req_read)
        os.close(rep_write)
        self.requests = 0
        rendering, _ = self.evaluate(
            "Rel = erlang:system_info(otp_release), "
            '{ok, V} = file:read_file(filename:join([code:root_dir(), "releases", Rel, "OTP_VERSION"])), '
            "string:trim(V)."
        )
        #: The full OTP version, such as ``"25.2.3"``.
        self.otp_version = rendering.partition(b":")[2].decode()

    # -- protocol ---------------------------------------------------------------------------

    def _call(self, request: bytes) -> tuple[int, list[bytes]]:
        os.write(self._req_write, struct.pack(">I", len(request)) + request)
        size = struct.unpack(">I", self._read(4))[0]
        reply = self._read(size)
        self.requests += 1
        if reply[:1] == b"x":
            raise ErlangError(reply[1:].decode("utf-8", "replace"))
        used = struct.unpack(">I", reply[1:5])[0]
        fields: list[bytes] = []
        pos = 5
        while pos < len(reply):
            length = struct.unpack(">I", reply[pos : pos + 4])[0]
            fields.append(reply[pos + 4 : pos + 4 + length])
            pos += 4 + length
        return used, fields

    def _read(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = os.read(self._rep_read, size - len(chunks))
            if not chunk:
                err = (
                    self._proc.stderr.read().decode("utf-8", "replace") if self._proc.stderr else ""
                )
                raise RuntimeError(f"the Erlang oracle exited: {err}")
            chunks += chunk
        return bytes(chunks)

    def roundtrip(self, etf: bytes) -> tuple[int, bytes, list[bytes]]:
        """Erlang's ``binary_to_term`` of ``etf``: (bytes used, rendering, re-encodings)."""
        used, fields = self._call(b"R" + etf)
        return used, fields[0], fields[1:]

    def evaluate(self, source: str) -> tuple[bytes, list[bytes]]:
        """Evaluate one Erlang expression: (rendering, encodings per :data:`ENCODINGS`)."""
        _, fields = self._call(b"E" + source.encode())
        return fields[0], fields[1:]

    def close(self) -> None:
        os.close(self._req_write)  # Erlang sees eof and halts
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if Erlang hangs
            self._proc.kill()
            self._proc.wait()
        os.close(self._rep_read)
        if self._proc.stderr:
            self._proc.stderr.close()


def render(value: Any) -> bytes:
    """The rendering Erlang gives the term that ``value`` should encode to (docs/protocol.md §10.1).

    ``str`` → binary, ``None`` → atom ``nil``, bools → atoms, ``list``/``tuple`` → list,
    ``dict`` → map. Type-strict: ``True`` renders as an atom, ``1`` as an integer.
    """
    out: list[bytes] = []
    _render(value, out)
    return b"".join(out)


def _render(value: Any, out: list[bytes]) -> None:
    if value is None or value is True or value is False:
        name = {None: b"nil", True: b"true", False: b"false"}[value]
        out.append(b"a%d:%s" % (len(name), name))
    elif isinstance(value, int):
        out.append(b"i%d;" % value)
    elif isinstance(value, float):
        out.append(b"f%d;" % struct.unpack(">Q", struct.pack(">d", value))[0])
    elif isinstance(value, str):
        raw = value.encode()
        out.append(b"b%d:%s" % (len(raw), raw))
    elif isinstance(value, list | tuple):
        out.append(b"l%d:" % len(value))
        for item in value:
            _render(item, out)
    elif isinstance(value, dict):
        out.append(b"m%d:" % len(value))
        out.extend(sorted(render(key) + render(item) for key, item in value.items()))
    else:  # pragma: no cover - the strategies produce nothing else
        raise TypeError(f"cannot render {value!r}")
