"""The report for a terminal and for the HTML page's header: plain strings, no markup.

    verdict: FAIL (failed: validity, privacy)
    warning: the cohort ...
    generator: promptehr demo (preset=tiny, mode=hierarchical, spec.sex.female=0.55)
    seeds: cohort=0, n_patients=1000

Wording (docs/evaluation.md, "Reading the summary"): a measure's `verdict` is pass or FAIL for the
synthetic value against its threshold; `real sample` is the limit, the value the holdout (real patients
of the same data, scored the same way) gets, with its own verdict beside it. A real sample that FAILs
says the threshold is too strict for data this small, not that the generator is bad.
"""
from __future__ import annotations

import json
from typing import Any

from promptehr.model.evaluation.schema import Measure, Report

SECTIONS = ("fidelity", "validity", "privacy", "utility")
# The generator's name is the first of these keys it has (the CLI, demo and worker write different ones).
NAME_KEYS = ("name", "command", "model_name", "model_id")
COLUMNS = ("section", "measure", "synthetic", "threshold", "verdict", "real sample", "real sample verdict")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return v if isinstance(v, str) else json.dumps(v)


def key_values(options: dict[str, Any], prefix: str = "") -> list[str]:
    """{"a": 1, "b": {"c": "x"}} -> ["a=1", "b.c=x"]; empty dicts and None values are left out."""
    out = []
    for key, value in options.items():
        if isinstance(value, dict):
            out += key_values(value, f"{prefix}{key}.")
        elif value is not None:
            out.append(f"{prefix}{key}={_value(value)}")
    return out


def generator_line(generator: dict[str, Any] | None) -> str | None:
    """"generator: NAME (key=value, ...)", or None without a generator."""
    if not generator:
        return None
    key = next((k for k in NAME_KEYS if generator.get(k)), None)
    rest = key_values({k: v for k, v in generator.items() if k != key})
    name = str(generator[key]) if key else "unnamed"
    return f"generator: {name}" + (f" ({', '.join(rest)})" if rest else "")


def seeds_line(seeds: dict[str, Any] | None) -> str | None:
    return f"seeds: {', '.join(key_values(seeds))}" if seeds and key_values(seeds) else None


def verdict_line(report: Report) -> str:
    v = report.overall()
    return "verdict: PASS (every section passes)" if v.passed else f"verdict: FAIL (failed: {', '.join(v.failed_sections)})"


def header_lines(report: Report) -> list[str]:
    """The verdict, each warning, the generator and the seeds (the last two only when given)."""
    lines = [verdict_line(report), *(f"warning: {w.message}" for w in report.warnings)]
    return lines + [line for line in (generator_line(report.generator), seeds_line(report.seeds)) if line]


def num(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "FAIL")


def threshold(m: Measure) -> str:
    """One token: >=0.8, <=0.1, train+-0.2 (relative), real-0.03 (at most that below the real sample)."""
    if m.threshold is None:
        return "-"
    sign = {"min": ">=", "max": "<=", "rel": "train+-", "gap": "real-"}.get(m.direction or "", "")
    return f"{sign}{m.threshold:g}"


def section_measures(report: Report) -> dict[str, dict[str, Measure]]:
    """Each section's measures in order; the timeline's (schema 1.3) last, empty when it was not measured."""
    out = {section: getattr(report, section) for section in SECTIONS}
    if report.timeline is not None:
        out["timeline"] = report.timeline.measures
    return out


def note_lines(report: Report) -> list[str]:
    """"timeline: the model did not learn a timeline: ..." and "privacy: records are compared by ..."."""
    lines = []
    if report.timeline is not None and report.timeline.note:
        lines.append(f"timeline: {report.timeline.note}")
    if report.privacy_records is not None:
        lines.append(f"privacy: {report.privacy_records.note}")
    return lines


def summary_lines(report: Report) -> list[str]:
    """The header, one row per measure (COLUMNS), the verdict of each section, what privacy compared and
    why a timeline is missing, and the model's scores."""
    rows = [COLUMNS]
    unjudgeable = 0
    for section, measures in section_measures(report).items():
        for name, m in measures.items():
            rows.append((section, name, num(m.value), threshold(m), verdict(m.passed), num(m.limit), verdict(m.limit_pass)))
            unjudgeable += m.limit_pass is False
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    table = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    lines = [*header_lines(report), *table]
    lines.append("sections: " + ", ".join(f"{s} {verdict(ok)}" for s, ok in report.passed.items()))
    lines += note_lines(report)
    lines.append("real sample: the holdout (real patients the model never saw) scored the same way, what a perfect "
                 "generator reaches")
    if unjudgeable:
        lines.append(f"{unjudgeable} measure(s) FAIL even for the real sample: too little data to judge them by their "
                     "threshold; compare synthetic with real sample, or use data with more patients")
    if report.model is not None:
        ppl = report.model.perplexity
        lines.append(f"model: held-out perplexity {num(ppl.get('all'))} (unigram baseline {num(ppl.get('baseline_all'))}), "
                     f"reconstruction Jaccard {num(report.model.reconstruction_jaccard)} "
                     f"over {report.model.reconstruction_patients} patients")
        if report.model.note:
            lines.append(f"model: {report.model.note}")
    return lines
