"""Pipeline text: ``name{key=value,...},name,repeat(N){a,b}``, parsed and printed back.

Grammar (one line)::

    pipeline := item ("," item)*
    item     := NAME ["{" option ("," option)* "}"]  |  "repeat(" INT "){" pipeline "}"
    option   := KEY "=" value
    value    := item (";" item)*        -- more than one item only for list options
    item     := BARE | "double-quoted, with \\" \\\\ \\; escapes"

A quoted value is one string; in a list option ``;`` separates items even inside quotes (so
``exclude="/a/Conv;/b/Gemm"`` is two names) unless escaped as ``\\;``. The canonical text
prints options in declaration order and omits defaults, so ``parse(str(p)) == p``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Union

from onnxslim.core.pass_base import Pass, PassOptions
from onnxslim.core.registry import get_pass
from onnxslim.errors import OptionError

_BARE = re.compile(r"[^,{}=\"\s;()]+")
_NEEDS_QUOTES = re.compile(r"[,{}=\";()\s\\]")
_ESCAPED_SEMI = "\x00"  # a ';' written as '\;' inside quotes: never a list separator


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """One pass with its validated options."""

    name: str
    options: PassOptions

    def create(self) -> Pass:
        return get_pass(self.name)(self.options)

    def __str__(self) -> str:
        text = format_options(self.options)
        return f"{self.name}{{{text}}}" if text else self.name


@dataclasses.dataclass(frozen=True)
class Repeat:
    """``repeat(N){...}``: run the inner passes until none changes the graph, at most N times."""

    times: int
    items: tuple[PassSpec | Repeat, ...]

    def __str__(self) -> str:
        return f"repeat({self.times}){{{','.join(map(str, self.items))}}}"


@dataclasses.dataclass(frozen=True)
class Pipeline:
    items: tuple[PassSpec | Repeat, ...]

    def __str__(self) -> str:
        return ",".join(map(str, self.items))

    def specs(self) -> list[PassSpec]:
        """Every pass spec, flattened out of repeats, in order."""
        out: list[PassSpec] = []
        stack = list(self.items)
        while stack:
            item = stack.pop(0)
            if isinstance(item, Repeat):
                stack[0:0] = list(item.items)
            else:
                out.append(item)
        return out


def parse(text: str) -> Pipeline:
    """Parse pipeline text; raise ``OptionError`` with a one-line message on any mistake."""
    parser = _Parser(text)
    items = parser.items(top=True)
    if not items:
        raise OptionError("pipeline", None, "is empty")
    return Pipeline(tuple(items))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> OptionError:
        return OptionError("pipeline", None, f"{message} at column {self.pos + 1} of {self.text!r}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def bare(self) -> str:
        self.skip_ws()
        m = _BARE.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a name or value")
        self.pos = m.end()
        return m.group()

    def items(self, top: bool) -> list[PassSpec | Repeat]:
        out: list[PassSpec | Repeat] = []
        while True:
            out.append(self.item())
            nxt = self.peek()
            if nxt == ",":
                self.pos += 1
                continue
            if (top and nxt == "") or (not top and nxt == "}"):
                return out
            raise self.fail("expected ','" + ("" if top else " or '}'"))

    def item(self) -> PassSpec | Repeat:
        name = self.bare()
        if name == "repeat" and self.peek() == "(":
            self.pos += 1
            count = self.bare()
            if not count.isdigit() or int(count) < 1:
                raise self.fail("repeat needs a positive count")
            self.expect(")")
            self.expect("{")
            inner = self.items(top=False)
            self.expect("}")
            return Repeat(int(count), tuple(inner))
        cls = get_pass(name)
        raw: dict[str, list[tuple[str, bool]]] = {}
        if self.peek() == "{":
            self.pos += 1
            while self.peek() != "}":
                key = self.bare()
                self.expect("=")
                if key in raw:
                    raise OptionError(name, key, "given twice")
                raw[key] = self.value()
                if self.peek() == ",":
                    self.pos += 1
                elif self.peek() != "}":
                    raise self.fail("expected ',' or '}'")
            self.pos += 1
        return PassSpec(name, build_options(cls, raw))

    def value(self) -> list[tuple[str, bool]]:
        parts = [self.value_item()]
        while self.peek() == ";":
            self.pos += 1
            parts.append(self.value_item())
        return parts

    def value_item(self) -> tuple[str, bool]:
        if self.peek() != '"':
            return self.bare(), False
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == "\\" and self.pos < len(self.text):
                nxt = self.text[self.pos]
                chars.append(_ESCAPED_SEMI if nxt == ";" else nxt)
                self.pos += 1
            elif c == '"':
                return "".join(chars), True
            else:
                chars.append(c)
        raise self.fail("unterminated string")


def build_options(cls: type[Pass], raw: dict[str, list[tuple[str, bool]]]) -> PassOptions:
    """Coerce raw option text to the types declared by ``cls.Options`` and validate."""
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    hints = typing.get_type_hints(cls.Options)
    values: dict[str, Any] = {}
    for key, parts in raw.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise OptionError(cls.name, key, f"unknown option (options: {known})")
        values[key] = _coerce(cls.name, key, hints[key], parts)
    return cls.Options(**values)


def _coerce(pass_name: str, key: str, hint: Any, parts: list[tuple[str, bool]]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple:
        items = [piece for text, quoted in parts for piece in _split_list(text, quoted)]
        return tuple(_scalar(pass_name, key, args[0], text) for text in items)
    if len(parts) != 1:
        raise OptionError(pass_name, key, "takes one value, not a ';' list")
    text = parts[0][0].replace(_ESCAPED_SEMI, ";")
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if text == "none":
            return None
        return _scalar(pass_name, key, inner[0], text)
    return _scalar(pass_name, key, hint, text)


def _split_list(text: str, quoted: bool) -> list[str]:
    pieces = text.split(";") if quoted else [text]
    return [p.replace(_ESCAPED_SEMI, ";") for p in pieces]


def _scalar(pass_name: str, key: str, kind: Any, text: str) -> Any:
    try:
        if kind is bool:
            if text not in ("true", "false"):
                raise ValueError
            return text == "true"
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return str(text)
    except ValueError:
        name = getattr(kind, "__name__", str(kind))
        expected = "true or false" if kind is bool else f"a {name}"
        raise OptionError(pass_name, key, f"expected {expected}, got {text!r}") from None


def format_options(options: PassOptions) -> str:
    """Non-default options in declaration order, as pipeline text."""
    parts = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value != f.default:
            parts.append(f"{f.name}={format_value(value)}")
    return ",".join(parts)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ";".join(format_value(v) for v in value)
    if isinstance(value, str):
        if value and not _NEEDS_QUOTES.search(value):
            return value
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace(";", "\\;")
        return f'"{escaped}"'
    return repr(value)
