"""What a pass is: declared options, a ``plan`` (what it would change, as data), an ``apply`` that
rewrites in place, an honest result. ``run(graph, ctx)`` is ``apply(plan(...))``; an exact pass may
implement ``run`` alone, and its plan is then the trivial one (``Plan.of_result``: what a run on a
copy changed).

A pass never does I/O. Everything it needs from the outside world (calibration data, ONNX
Runtime sessions, latency measurements) comes through the ``PassContext`` the manager hands it.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import TYPE_CHECKING, Any, ClassVar

from onnxslim.errors import OptionError

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxslim.core.context import PassContext
    from onnxslim.runtime.parity import Tolerance

KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
WHOLE_GRAPH = "graph"  # where the trivial plan of an exact pass changes: its stats say what
MAX_LISTED = 12  # changes printed per plan; the report has them all


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    """Declare a pass option: its default, its help text and, for words, the allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class PassOptions:
    """Base of every pass's options. Subclasses add fields with ``option(...)``.

    ``validate`` runs on construction; it raises ``OptionError`` naming the option.
    Fields whose ``choices`` are declared are checked here, so subclasses only add range checks.
    """

    pass_name: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise OptionError(self.pass_name, f.name, f"must be one of {'|'.join(choices)}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Range and cross-field checks; raise ``self.error(...)``."""

    def error(self, name: str, message: str) -> OptionError:
        return OptionError(self.pass_name, name, message)


@dataclasses.dataclass(frozen=True)
class Decline:
    """A place that was examined and deliberately left alone, with the reason as a sentence."""

    where: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


@dataclasses.dataclass
class Plan:
    """What a pass would change and where it declines, as JSON-ready data (node and tensor names,
    numbers, sentences), made without changing the graph.

    ``changes``: one dict per place the pass would change (``where`` names the node or tensor).
    ``pending``: choices left to ``apply`` because they need calibration data or timing the plan
    did not use (each a sentence saying which and why); ``measured``: what the plan itself took from
    calibration data. A plan with nothing pending is complete: ``apply`` measures nothing more.
    ``cache`` holds what planning computed that ``apply`` reuses (factors, analysed graphs); it is
    never serialized, and ``apply`` recomputes it when it is missing.
    """

    pass_name: str
    changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    declines: list[Decline] = dataclasses.field(default_factory=list)
    pending: list[str] = dataclasses.field(default_factory=list)
    measured: list[str] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        return not self.pending

    @classmethod
    def of_result(cls, name: str, result: PassResult) -> Plan:
        """The trivial plan of an exact pass: what a run changed, read off its result."""
        summary = {k: v for k, v in result.stats.items() if not isinstance(v, (dict, list))}
        return cls(name, [{"where": WHOLE_GRAPH, **summary}] if result.modified else [], list(result.declines),
                   summary=summary, notes=list(result.notes))

    def to_dict(self) -> dict[str, Any]:
        return {"pass": self.pass_name, "changes": self.changes, "declines": [d.to_dict() for d in self.declines],
                "pending": self.pending, "measured": self.measured, "summary": self.summary, "notes": self.notes}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Plan:
        """The plan ``to_dict`` gave (without its cache)."""
        return cls(doc["pass"], list(doc["changes"]), [Decline(**d) for d in doc["declines"]], list(doc["pending"]),
                   list(doc["measured"]), dict(doc["summary"]), list(doc["notes"]))

    def lines(self, head: str) -> list[str]:
        """The plan as the CLI prints it: a head line, then one line per decline, decision left and note."""
        summary = ", ".join(f"{k}={v}" for k, v in self.summary.items() if not isinstance(v, (dict, list)))
        out = [f"{head}: {'would change' if self.changes else 'no change'}" + (f" ({summary})" if summary else "")]
        listed = [c for c in self.changes if c.get("where") != WHOLE_GRAPH]
        for change in listed[:MAX_LISTED]:
            what = ", ".join(f"{k}={v}" for k, v in change.items() if k != "where")
            out.append(f"  changes {change.get('where', '?')}" + (f": {what}" if what else ""))
        if len(listed) > MAX_LISTED:
            out.append(f"  ... {len(listed) - MAX_LISTED} more changes (the plan in the report lists all)")
        out += [f"  declines {d.where}: {d.reason}" for d in self.declines]
        out += [f"  from calibration data: {m}" for m in self.measured]
        out += [f"  decided when run: {p}" for p in self.pending]
        out += [f"  note: {n}" for n in self.notes]
        return out


@dataclasses.dataclass
class PassResult:
    """What a pass did. ``modified`` must be true exactly when the graph changed."""

    modified: bool
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    declines: list[Decline] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


class Pass(abc.ABC):
    """A graph rewrite. Subclasses set ``name``, ``Options``, ``exact`` and implement ``plan`` and
    ``apply`` (or, for an exact pass, ``run`` alone)."""

    name: ClassVar[str]
    Options: ClassVar[type[PassOptions]] = PassOptions
    exact: ClassVar[bool] = True
    #: exact passes whose clean graph this pass needs, in the order they run; the manager runs the
    #: ones that have not run yet in the pipeline first, and the report marks them as inserted
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: PassOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect_abstract(cls):
            return
        if not KEBAB.fullmatch(getattr(cls, "name", "")):
            raise TypeError(f"pass class {cls.__qualname__} needs a kebab-case `name`")
        if cls.run is Pass.run and (cls.plan is Pass.plan or cls.apply is Pass.apply):
            raise TypeError(f"pass class {cls.__qualname__} implements neither run nor plan and apply")
        if cls.Options is PassOptions:  # each pass gets its own options class, so errors name it
            cls.Options = dataclasses.make_dataclass(f"{cls.__name__}Options", [], bases=(PassOptions,), frozen=True)
        cls.Options.pass_name = cls.name

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        """Rewrite ``graph`` in place and report what changed."""
        return self.apply(graph, ctx, self.plan(graph, ctx))

    def plan(self, graph: gs.Graph, ctx: PassContext) -> Plan:
        """What ``apply`` would change; ``graph`` is left as it is. The trivial plan runs on a copy."""
        return Plan.of_result(self.name, self.run(graph.copy(), ctx))

    def apply(self, graph: gs.Graph, ctx: PassContext, plan: Plan) -> PassResult:
        """Carry out ``plan`` (made by ``plan`` on this graph); the trivial plan is made again by a run."""
        return self.run(graph, ctx)

    def required(self) -> tuple[str, ...]:
        """``requires`` for these options (a pass whose options read what a requirement removes
        overrides this, e.g. prune-channels ranking channels by their BatchNormalization)."""
        return self.requires

    def needs_calibration(self) -> bool:
        """True when these options need calibration data (the manager checks before running)."""
        return False

    def tolerance(self) -> Tolerance | None:
        """The parity budget of a lossy pass with these options; None for exact passes."""
        return None


def inspect_abstract(cls: type) -> bool:
    return bool(getattr(cls, "__abstractmethods__", None))
