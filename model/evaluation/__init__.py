"""The evaluation report: fidelity, validity, privacy, utility and model scores of a synthetic cohort.

Entry point: `build_report(synthetic, train, holdout, *, config=None, model_scorer=None) -> Report`;
`render_html(report) -> str` for the page a person reads. See docs/evaluation.md.
"""
from promptehr.model.evaluation.report import build_report
from promptehr.model.evaluation.schema import SCHEMA_VERSION, EvaluationConfig, Measure, Report

__all__ = ["SCHEMA_VERSION", "EvaluationConfig", "Measure", "Report", "build_report"]
