"""Human-readable tables for the CLI: compact, aligned, one screen."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from onnxslim.core.pipeline import format_value
from onnxslim.core.registry import all_passes


def format_outcome(outcome: Any, model: Path) -> str:
    doc = outcome.report
    if doc.get("dry_run"):
        return "\n".join([f"dry run of '{doc['pipeline']}' on {model} (nothing written)", *outcome.plan])
    lines = [f"{model} -> {outcome.output or 'nothing written'}"]
    if doc.get("pipeline"):
        lines.append(f"pipeline: {doc['pipeline']}")
    lines += [f"warning: {w}" for w in doc.get("warnings", [])]  # on top: e.g. "int8 is slower than fp32"
    lines += ["", _cost_table(doc["input"], doc["output"])]
    if doc.get("passes"):
        lines += ["", _passes_table(doc["passes"])]
    if doc.get("parity"):
        lines += ["", _parity_table(doc["parity"], doc.get("metric"))]
    for provider, lat in doc.get("latency", {}).items():
        o, r = lat["original"], lat["result"]
        lines.append(
            f"latency {provider} (batch {o['batch']}, {o['threads']} thread{'' if o['threads'] == 1 else 's'}, {o['runs']} runs each): "
            f"median {o['median_ms']:.3f} -> {r['median_ms']:.3f} ms ({lat['ratio']}x), "
            f"p90 {o['p90_ms']:.3f} -> {r['p90_ms']:.3f} ms"
        )
    return "\n".join(lines)


def _cost_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    rows = [
        ("nodes", before["nodes"], after["nodes"]),
        ("nodes after ORT optimization", before["nodes_optimized"], after["nodes_optimized"]),
        ("params", before["params"], after["params"]),
        ("nonzero params", before["nonzero_params"], after["nonzero_params"]),
        ("bytes", before["bytes"], after["bytes"]),
        ("zip bytes", before["compressed_bytes"], after["compressed_bytes"]),
        ("FLOPs", before["flops"]["total"], after["flops"]["total"]),
    ]
    out = [f"{'':30}{'before':>14}{'after':>14}{'after/before':>14}"]
    for name, b, a in rows:
        ratio = f"{a / b:.3f}" if isinstance(a, int) and isinstance(b, int) and b else "-"
        out.append(f"{name:30}{_num(b):>14}{_num(a):>14}{ratio:>14}")
    return "\n".join(out)


def _passes_table(passes: list[dict[str, Any]]) -> str:
    out = [f"{'pass':28}{'changed':>11}{'seconds':>9}{'nodes':>8}{'params':>11}  stats"]
    for p in passes:
        name = f"{p['name']}{{{p['options']}}}" if p["options"] else p["name"]
        stats = ", ".join(f"{k}={v}" for k, v in p["stats"].items() if not isinstance(v, (dict, list)))
        flag = "rolled back" if p.get("rolled_back") else ("yes" if p["changed"] else "no")
        delta = p.get("delta") or {}
        nodes, params = (f"{delta[k]:+,}" if k in delta else "" for k in ("nodes", "params"))
        out.append(f"{name:28}{flag:>11}{p['seconds']:>9.3f}{nodes:>8}{params:>11}  {stats}")
        if p["declines"]:
            first = p["declines"][0]
            more = f" (+{len(p['declines']) - 1} more)" if len(p["declines"]) > 1 else ""
            out.append(f"{'':28}  declined {first['where']}: {first['reason']}{more}")
        out += [f"{'':28}  note: {note}" for note in p.get("notes", [])]
    return "\n".join(out)


def _parity_table(parity: dict[str, Any], metric: dict[str, Any] | None = None) -> str:
    if parity.get("measured") is False:
        return f"parity: not measured ({parity['reason']})"
    verdict = "held" if parity["held"] else "FAILED"
    if not parity.get("decides", True):
        verdict += ", informational: --max-drop decides"
    out = [f"parity on {parity['data']} (tolerance {parity['tolerance']}): {verdict}",
           f"{'output':24}{'max_abs':>12}{'max_rel':>12}{'cosine':>12}{'sqnr_db':>10}{'top1':>8}  judged by"]
    for m in parity["outputs"]:
        if m.get("error"):
            out.append(f"{m['name'][:24]:24}  not compared: {m['error']}")
            continue
        top1 = "-" if m.get("top1") is None else f"{m['top1']:.4f}"
        judged = ",".join(m.get("judged_by") or []) or "-"
        out.append(f"{m['name'][:24]:24}{_g(m['max_abs']):>12}{_g(m['max_rel']):>12}{_g(m['cosine'], 6):>12}"
                   f"{_g(m['sqnr_db'], 1):>10}{top1:>8}  {judged}")
    if metric:
        budget = "" if metric.get("max_drop") is None else (
            f" (--max-drop {metric['max_drop']:g}: {'held' if metric['held'] else 'FAILED'})")
        where = f" on {metric['output']}" if metric.get("output") else ""
        out.append(f"metric {metric['metric']}{where}: {metric['original']:.4f} -> {metric['result']:.4f}, "
                   f"drop {metric['drop_points']:.2f} points{budget}")
    return "\n".join(out)


def format_inspect(doc: dict[str, Any]) -> str:
    lines = [f"{doc['path']}: opset {doc['opset']}",
             f"nodes {doc['nodes']} (after ORT optimization {doc['nodes_optimized']}), params {_num(doc['params'])} "
             f"(nonzero {_num(doc['nonzero_params'])}), bytes {_num(doc['bytes'])} (zip {_num(doc['compressed_bytes'])})"]
    for kind in ("inputs", "outputs"):
        for v in doc[kind]:
            lines.append(f"{kind[:-1]:7} {v['name']}: {v['dtype']} {v['dims']}")
    flops = doc["flops"]
    lines.append(f"FLOPs at {doc['feed_shapes']}: {_num(flops['total'])} (compute {_num(flops['compute'])}, "
                 f"elementwise {_num(flops['elementwise'])})")
    for op, value in flops.items():
        if op not in ("total", "compute", "elementwise"):
            lines.append(f"  {op:20}{_num(value):>16}")
    lines.append("ops:")
    for op, count in sorted(doc["op_histogram"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {op:28}{count:>6}")
    return "\n".join(lines)


def format_passes() -> str:
    lines: list[str] = []
    for cls in all_passes():
        doc = next(iter((cls.__doc__ or "").strip().splitlines()), "")  # a pass may have no docstring
        kind = "exact" if cls.exact else "lossy"
        lines.append(f"{cls.name} ({kind}): {doc}")
        hints = typing.get_type_hints(cls.Options)
        for f in dataclasses.fields(cls.Options):
            choices = f.metadata.get("choices")
            kind_text = "|".join(choices) if choices else _type_name(hints[f.name])
            lines.append(f"    {f.name} ({kind_text}, default {format_value(f.default)}): {f.metadata.get('help', '')}")
        budget = cls().tolerance() if not cls.exact else None
        per_output = " (class-score outputs by top1 on real data, the others by the rest)" if budget and budget.per_output else ""
        lines.append(f"    parity budget: {budget if budget is not None else 'exact'}{per_output}")
    return "\n".join(lines)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"list of {_type_name(typing.get_args(hint)[0])}, ';'-separated"
    return getattr(hint, "__name__", None) or str(hint)


def _g(value: Any, digits: int | None = None) -> str:
    """A metric for the table; JSON keeps inf/nan as strings, shown as they are."""
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}" if digits is not None else f"{value:.3g}"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
