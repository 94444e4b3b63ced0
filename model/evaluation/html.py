"""The report as one self-contained HTML page: inline CSS, figures as base64 PNG, no script, no links.

A person reads it offline or from an e-mail attachment, so nothing may be fetched from elsewhere.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from promptehr.model.codes import describe
from promptehr.model.evaluation import plots, text
from promptehr.model.evaluation.fidelity import top_codes
from promptehr.model.evaluation.schema import Measure, Report
from promptehr.model.generation.population import AGE_EDGES as DECADES

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:14px}
th{background:#f2f2f2} td.name,td.desc{text-align:left}
.pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:600} .na{color:#888}
.side{display:flex;gap:2em;flex-wrap:wrap} img{max-width:100%}
.verdict{font-size:20px;padding:6px 12px;border-radius:4px;display:inline-block;color:#fff}
.verdict.pass{background:#1a7f37;color:#fff} .verdict.fail{background:#cf222e;color:#fff}
.warning{background:#fff8c5;border:1px solid #d4a72c;padding:4px 10px;margin:4px 0}
"""


def _png(fig, alt: str = "figure") -> str:

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plots.plt.close(fig)  # plots.py imports pyplot after choosing the Agg backend
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _num(x) -> str:
    if x is None:
        return '<span class="na">-</span>'
    if isinstance(x, float):
        return f"{x:.4g}"
    return html.escape(str(x))


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return '<span class="na">n/a</span>'
    return '<span class="pass">pass</span>' if ok else '<span class="fail">fail</span>'


def _threshold(m: Measure) -> str:
    sign = {"min": "&ge; ", "max": "&le; ", "rel": "&plusmn;rel ", "gap": "&ge; limit &minus; "}.get(m.direction or "", "")
    return sign + _num(m.threshold) if m.threshold is not None else _num(None)


def section_notes(report: Report) -> dict[str, str]:
    """A sentence under a section's heading: what privacy compares, why the timeline was not measured."""
    notes = {}
    if report.privacy_records is not None:
        notes["privacy"] = report.privacy_records.note
    if report.timeline is not None and report.timeline.note:
        notes["timeline"] = report.timeline.note
    return notes


def summary_table(report: Report) -> str:
    rows = []
    notes = section_notes(report)
    sections = {s: getattr(report, s) for s in ("fidelity", "validity", "privacy", "utility")}
    if report.timeline is not None:
        sections["timeline"] = report.timeline.measures
    for section, measures in sections.items():
        verdict = _verdict(report.passed.get(section))
        rows.append(f'<tr><th colspan="8" style="text-align:left">{section} &mdash; {verdict}</th></tr>')
        if section in notes:
            rows.append(f'<tr><td class="desc" colspan="8">{html.escape(notes[section])}</td></tr>')
        for name, m in measures.items():
            spread = f"&plusmn;{m.spread:.2g}" if m.spread is not None else ""
            rows.append(
                f'<tr><td class="name">{html.escape(name)}</td><td>{_num(m.value)} {spread}</td><td>{_num(m.full)}</td>'
                f"<td>{_threshold(m)}</td><td>{_verdict(m.passed)}</td>"
                f"<td>{_num(m.limit)}</td><td>{_verdict(m.limit_pass)}</td><td>{_num(m.reference)}</td></tr>"
            )
    head = ("<tr><th>measure</th><th>synthetic (equal-size mean &plusmn; std)</th><th>synthetic, whole cohort</th>"
            "<th>threshold</th><th>verdict</th><th>real sample (holdout)</th><th>real sample verdict</th><th>train</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def data_table(report: Report) -> str:
    rows = "".join(
        f"<tr><td class='name'>{name}</td><td>{s.patients}</td><td>{s.visits}</td><td>{s.codes}</td><td>{s.distinct_codes}</td></tr>"
        for name, s in (("train", report.data.train), ("holdout", report.data.holdout), ("synthetic", report.data.synthetic))
    )
    return f"<table><tr><th>cohort</th><th>patients</th><th>visits</th><th>code slots</th><th>distinct codes</th></tr>{rows}</table>"


def model_table(report: Report) -> str:
    if report.model is None:
        return "<p>No model was given: perplexity and reconstruction were not computed.</p>"
    m = report.model
    size = (f"<p>Scored on {m.patients} of the holdout's {m.holdout_patients} patients"
            f"{' (a seeded subsample)' if (m.patients or 0) < (m.holdout_patients or 0) else ''}.</p>"
            if m.patients is not None else "")
    rows = "".join(f"<tr><td class='name'>perplexity {html.escape(k)}</td><td>{_num(v)}</td></tr>" for k, v in report.model.perplexity.items())
    rows += (f"<tr><td class='name'>reconstruction Jaccard ({report.model.reconstruction_patients} holdout patients)</td>"
             f"<td>{_num(report.model.reconstruction_jaccard)}</td></tr>")
    return f"{size}<table>{rows}</table>"


def demographics_table(report: Report) -> str:
    """The cohort's age and sex beside the requested population (evaluation/demographics.py), with limits."""
    if not report.demographics or not report.population:
        return ""
    req, syn = report.population["requested"], report.population["synthetic"]
    rows = "".join(
        f"<tr><td class='name'>{html.escape(name)}</td><td>{_num(getattr(m, 'synthetic', None))}</td><td>{_num(m.reference)}</td>"
        f"<td>{_num(m.value)}</td><td>{_threshold(m)}</td><td>{_verdict(m.passed)}</td></tr>"
        for name, m in report.demographics.items())
    bins = "".join(f"<th>{lo}-{hi - 1}</th>" for lo, hi in zip(DECADES[:-1], DECADES[1:]))
    hist = "".join(f"<tr><td class='name'>{k}</td>" + "".join(f"<td>{x:.3f}</td>" for x in d["age_histogram"]) + "</tr>"
                   for k, d in (("synthetic", syn), ("requested", req)))
    return (f"<h2>Demographics: the cohort beside the population asked for</h2><p>Requested: {html.escape(str(req['source']))}; "
            f"mean age {req['age_mean']:.1f} (sd {req['age_sd']:.1f}), female share {req['female']:.3f}. Not part of the "
            "overall verdict: the sampler draws demographics from the spec itself.</p>"
            "<table><tr><th>measure</th><th>synthetic</th><th>requested</th><th>gap</th><th>threshold</th><th>verdict</th></tr>"
            f"{rows}</table><table><tr><th>age shares</th>{bins}</tr>{hist}</table>")


def card_html(report: Report) -> str:
    """The model card (card.json, model/training/card.py) when the report's model has one."""
    card = report.model_card
    if not card:
        return ""
    ppl, check, data = card.get("perplexity") or {}, card.get("check_cohort") or {}, card.get("data") or {}
    rows = [("data source", data.get("source")), ("training patients", (data.get("splits") or {}).get("train")),
            ("preset", card.get("preset")), ("mode", card.get("mode")),
            ("epochs (run / asked)", f"{card.get('epochs_run')} / {card.get('epochs')}"),
            ("training seconds", card.get("training_seconds")), ("code systems", ", ".join(card.get("code_systems") or [])),
            (f"held-out perplexity ({ppl.get('heldout', '-')})", ppl.get("ppl")), ("unigram baseline perplexity", ppl.get("baseline_ppl")),
            (f"check cohort ({check.get('patients', '-')} patients) verdicts", check.get("passed") or check.get("skipped"))]
    body = "".join(f"<tr><td class='name'>{html.escape(k)}</td><td class='desc'>{_num(v) if not isinstance(v, (dict, list)) else html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    warnings = "".join(f'<p class="warning">Warning: {html.escape(w)}</p>' for w in card.get("warnings") or [])
    return f"<h2>Model card</h2>{warnings}<table>{body}</table>"


def phenotype_table(report: Report) -> str:
    """Utility per phenotype: CCS group, its share of train and synthetic patients, TSTR beside TRTR."""
    if not report.utility_phenotypes:
        return ""
    rows = "".join(
        f"<tr><td class='name'>{html.escape(p.ccs)}</td><td class='desc'>{html.escape(p.title)}</td>"
        f"<td>{p.train_share:.3f}</td><td>{p.synthetic_share:.3f}</td><td>{p.holdout_positives}</td>"
        f"<td>{p.tstr_auroc:.3f}</td><td>{p.trtr_auroc:.3f}</td><td>{_auroc(p.trtr_equal_size_auroc)}</td></tr>"
        for p in report.utility_phenotypes
    )
    equal = report.utility.get("trtr_equal_size_auroc")
    size = f" ({equal.train_patients:,} train patients)" if equal is not None and hasattr(equal, "train_patients") else ""
    return ("<h2>Utility by phenotype (CCS diagnosis groups)</h2><table><tr><th>CCS</th><th>title</th><th>train share</th>"
            f"<th>synthetic share</th><th>holdout positives</th><th>TSTR AUROC</th><th>TRTR AUROC</th>"
            f"<th>TRTR AUROC at the cohort's size{size}</th></tr>{rows}</table>")


def _auroc(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def top_table(title: str, codes: list[str], prevalence: dict[str, np.ndarray], by: str, k: int = 20) -> str:
    """The k most frequent codes of one cohort, with their titles (ICD-9-CM or ICD-10-CM, model/codes.py)
    and every cohort's prevalence."""
    cols = top_codes(prevalence[by], k)
    head = "".join(f"<th>{n}</th>" for n in prevalence)
    rows = "".join(
        f"<tr><td class='name'>{html.escape(codes[j])}</td><td class='desc'>{html.escape(describe(codes[j], short=True))}</td>"
        + "".join(f"<td>{prevalence[n][j]:.3f}</td>" for n in prevalence) + "</tr>"
        for j in cols
    )
    return f"<div><h3>{title}</h3><table><tr><th>code</th><th>title</th>{head}</tr>{rows}</table></div>"


def figures_html(report: Report) -> str:
    f = report._figures
    if not f:
        return "<p>Figures are drawn only for a report built in this process.</p>"
    prev = f["code_prevalence"]
    parts = ["<h2>Prevalence: real vs synthetic</h2><div class='side'>"]
    train = prev["train"]
    parts.append(_png(plots.prevalence_scatter({k: (train, prev[k]) for k in ("holdout", "synthetic")}, "codes (share of visits)")))
    parts.append(_png(plots.prevalence_scatter(f["pair_prevalence"], "same-visit pairs (share of visits)")))
    parts.append("</div>")
    if report.fidelity_by_size is not None and report.fidelity_by_size.n:
        parts.append("<h2>Fidelity by sample size</h2><p>R^2 against train of synthetic and holdout samples of the "
                     "same size: where the synthetic curve stays on the holdout's, it is as good as real data.</p>")
        parts.append(_png(plots.fidelity_by_size(report.fidelity_by_size.model_dump())))
    parts.append("<h2>Lengths</h2>")
    parts.append(_png(plots.count_histograms(f["lengths"])))
    if "timeline" in f:
        parts.append("<h2>Timeline: days between visits and length of stay</h2>")
        parts.append(_png(plots.day_histogram(f["timeline"]["gaps"], "days between consecutive visit starts"),
                          "histogram of days between visits"))
        parts.append(_png(plots.day_histogram(f["timeline"]["stays"], "length of stay"), "histogram of lengths of stay"))
    parts.append("<h2>Demographics</h2>")
    parts.append(_png(plots.demographics(f["demographics"])))
    parts.append("<h2>Privacy: distance to the closest record</h2>")
    parts.append(_png(plots.distance_histograms(f["distances"])))
    parts.append("<h2>Top 20 codes</h2><div class='side'>")
    parts.append(top_table("most frequent in train", f["codes"], prev, "train"))
    parts.append(top_table("most frequent in synthetic", f["codes"], prev, "synthetic"))
    parts.append("</div>")
    return "".join(parts)


def header_html(report: Report) -> str:
    """The overall verdict, the warnings, then generator, seeds and the report's own facts (text.py's wording)."""
    v = report.overall()
    parts = [f'<p class="verdict {"pass" if v.passed else "fail"}">{html.escape(text.verdict_line(report))}</p>']
    parts += [f'<p class="warning">Warning: {html.escape(w.message)}</p>' for w in report.warnings]
    lines = [line for line in (text.generator_line(report.generator), text.seeds_line(report.seeds)) if line]
    lines.append(f"schema {report.schema_version}, created {report.created_at}, split seed {report.split_seed}")
    return "".join(parts) + "".join(f"<p>{html.escape(line)}</p>" for line in lines)


def render_html(report: Report) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>PromptEHR cohort report</title>"
        f"<style>{CSS}</style></head><body><h1>Synthetic cohort report</h1>{header_html(report)}"
        f"<h2>Data</h2>{data_table(report)}<h2>Summary</h2>"
        "<p>Each synthetic figure has a verdict (pass or fail against its threshold) and stands beside the "
        "real sample: the holdout, real patients of the same data, scored against train the same way: what a "
        "perfect generator reaches. Where the real sample fails too, the threshold is too strict for data this "
        "small: read the synthetic figure against the real sample's. Measures that move with sample size are the "
        "mean (&plusmn; std) over synthetic subsamples of the holdout's size; the whole-cohort value is beside it.</p>"
        f"{summary_table(report)}{demographics_table(report)}{phenotype_table(report)}<h2>Model</h2>{model_table(report)}{card_html(report)}{figures_html(report)}</body></html>"
    )
