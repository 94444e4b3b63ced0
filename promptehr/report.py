"""`promptehr.Report`: the cohort report of `Synthesizer.evaluate`, for a notebook.

A thin view of the report `promptehr evaluate` writes (promptehr.model.evaluation: build_report, its
pydantic schema and render_html): `to_json()` is that command's JSON and `to_html(path)` its page;
`summary()` is the measures as a pandas DataFrame, `passed` the overall verdict.

    report = synth.evaluate(cohort)
    report.passed                      # True when every section passes
    report.summary()                   # section, measure, value, limit, verdict: one row per measure
    report.to_html("report.html")      # the self-contained page
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

SECTIONS = ("fidelity", "validity", "privacy", "utility")
COLUMNS = ["section", "measure", "value", "limit", "verdict"]


class Report:
    """The evaluation of a synthetic cohort against real data (docs/evaluation.md says what each measure is).

    `report.report` is the underlying promptehr.model.evaluation.Report (pydantic), for every field the
    JSON holds.
    """

    def __init__(self, report):
        self.report = report

    @property
    def passed(self) -> bool:
        """The overall verdict: every section passes."""
        return bool(self.report.overall().passed)

    @property
    def sections(self) -> dict[str, bool]:
        """Each section's verdict, {"fidelity": True, ...}."""
        return dict(self.report.passed)

    @property
    def warnings(self) -> list[str]:
        """What makes the measures hard to read (e.g. a cohort and real data of different sources)."""
        return [w.message for w in self.report.warnings]

    def summary(self) -> pd.DataFrame:
        """One row per measure: section, measure, value, limit (the holdout's own value, what a perfect
        generator reaches) and verdict ("pass", "fail", or "n/a": a measure without a threshold, or without a value on data this small).
        Model scores, when the report has them, follow as section "model" without verdicts."""
        rows = []
        sections = {section: getattr(self.report, section) for section in SECTIONS}
        if self.report.timeline is not None:  # schema 1.3: measures only when the timeline was measured
            sections["timeline"] = self.report.timeline.measures
        for section, measures in sections.items():
            for name, m in measures.items():
                verdict = "n/a" if m.passed is None else ("pass" if m.passed else "fail")
                rows.append((section, name, m.value, m.limit, verdict))
        model = self.report.model
        if model is not None:
            rows += [("model", f"perplexity_{k}", v, None, "n/a") for k, v in model.perplexity.items()]
            rows.append(("model", "reconstruction_jaccard", model.reconstruction_jaccard, None, "n/a"))
        return pd.DataFrame(rows, columns=COLUMNS)

    def to_dict(self) -> dict:
        """The JSON document as Python objects."""
        return self.report.to_dict()

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 2) -> str:
        """The report's JSON, as `promptehr evaluate --out` writes it; also written to `path` when given."""
        text = self.report.to_json(indent=indent)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_html(self, path: str | Path | None = None) -> str:
        """The self-contained HTML page of `promptehr evaluate --html` (figures inline); written to `path`
        when given; returns the page."""
        from promptehr.model.evaluation.html import render_html

        page = render_html(self.report)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def __repr__(self) -> str:
        from promptehr.model.evaluation.text import verdict_line

        return f"<promptehr.Report {verdict_line(self.report)}; {self.report.data.synthetic.patients} synthetic patients>"

    def _repr_html_(self) -> str:  # Jupyter shows the summary table
        return self.summary().to_html(index=False, na_rep="")
