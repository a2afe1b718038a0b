"""What a pass is: declared options, a ``run(graph, ctx)`` that rewrites in place, an honest result.

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
class PassResult:
    """What a pass did. ``modified`` must be true exactly when the graph changed."""

    modified: bool
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    declines: list[Decline] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


class Pass(abc.ABC):
    """A graph rewrite. Subclasses set ``name``, ``Options``, ``exact`` and implement ``run``."""

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
        if cls.Options is PassOptions:  # each pass gets its own options class, so errors name it
            cls.Options = dataclasses.make_dataclass(f"{cls.__name__}Options", [], bases=(PassOptions,), frozen=True)
        cls.Options.pass_name = cls.name

    @abc.abstractmethod
    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        """Rewrite ``graph`` in place and report what changed."""

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
