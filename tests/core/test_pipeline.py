"""Pipeline text: parsing, canonical printing, and one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxslim.core.pass_base import Pass, PassOptions, PassResult, option
from onnxslim.core.pipeline import PassSpec, Repeat, format_options, parse
from onnxslim.core.registry import register_pass
from onnxslim.errors import OptionError


@dataclasses.dataclass(frozen=True)
class _ProbeOptions(PassOptions):
    ratio: float = option(0.5, "a float in [0, 1)")
    count: int = option(3, "an int")
    flag: bool = option(False, "a bool")
    mode: str = option("fast", "a word", choices=("fast", "slow"))
    label: str = option("x", "any string")
    names: tuple[str, ...] = option((), "a list of names")
    budget: float | None = option(None, "an optional float")

    def validate(self) -> None:
        if not 0 <= self.ratio < 1:
            raise self.error("ratio", f"must be in [0, 1), got {self.ratio}")


@register_pass
class _ProbePass(Pass):
    """Test-only pass with one option of every supported type."""

    name = "test-probe"
    Options = _ProbeOptions

    def run(self, graph, ctx) -> PassResult:
        return PassResult(modified=False)


def test_canonical_text_omits_defaults_and_keeps_declaration_order():
    pipeline = parse(" dce , test-probe{ flag=true, ratio=0.25 },fold-bn")
    assert str(pipeline) == "dce,test-probe{ratio=0.25,flag=true},fold-bn"
    assert parse(str(pipeline)) == pipeline


def test_quoted_strings_and_lists():
    pipeline = parse('test-probe{label="a,b{c}=d",names="/conv1/Conv;/head/Gemm"}')
    spec = pipeline.items[0]
    assert spec.options.label == "a,b{c}=d"
    assert spec.options.names == ("/conv1/Conv", "/head/Gemm")
    assert parse(str(pipeline)) == pipeline


def test_escaped_semicolon_stays_inside_one_list_item():
    spec = parse(r'test-probe{names="a\;b;c"}').items[0]
    assert spec.options.names == ("a;b", "c")
    assert parse(str(parse(r'test-probe{names="a\;b;c"}'))).items[0].options.names == ("a;b", "c")


def test_repeat_round_trips():
    pipeline = parse("repeat(3){fold-constants,dce},fold-bn")
    assert isinstance(pipeline.items[0], Repeat)
    assert pipeline.items[0].times == 3
    assert str(pipeline) == "repeat(3){fold-constants,dce},fold-bn"
    assert [s.name for s in pipeline.specs()] == ["fold-constants", "dce", "fold-bn"]


def test_optional_value_none():
    assert parse("test-probe{budget=0.1}").items[0].options.budget == 0.1
    assert parse("test-probe{budget=none}").items[0].options.budget is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-such-pass", "unknown pass"),
        ("test-probe{nope=1}", "unknown option"),
        ("test-probe{ratio=lots}", "expected a float"),
        ("test-probe{count=1.5}", "expected a int"),
        ("test-probe{flag=yes}", "true or false"),
        ("test-probe{mode=medium}", "must be one of fast|slow"),
        ("test-probe{ratio=1.5}", r"must be in \[0, 1\)"),
        ("test-probe{ratio=0.1,ratio=0.2}", "given twice"),
        ('test-probe{label="open}', "unterminated string"),
        ("test-probe{ratio=0.1", "expected"),
        ("dce,,fold-bn", "expected a name"),
        ("repeat(0){dce}", "positive count"),
        ("", "expected a name"),
        ("test-probe{count=1;2}", "one value"),
    ],
)
def test_errors_are_one_line_and_name_the_problem(text, message):
    with pytest.raises(OptionError, match=message) as info:
        parse(text)
    assert "\n" not in str(info.value)


_word = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "S")), min_size=1, max_size=8)


@given(
    ratio=st.floats(0, 0.99, allow_nan=False),
    count=st.integers(-5, 100),
    flag=st.booleans(),
    mode=st.sampled_from(["fast", "slow"]),
    label=_word,
    names=st.lists(_word, max_size=3).map(tuple),
)
def test_parse_of_print_is_identity(ratio, count, flag, mode, label, names):
    options = _ProbeOptions(ratio=ratio, count=count, flag=flag, mode=mode, label=label, names=names)
    spec = PassSpec("test-probe", options)
    text = f"dce,{spec}"
    assert parse(text).items[1] == spec, (text, format_options(options))
