"""Reports: a cohort's evaluation (a job of kind "evaluate"; see service/store/job_kinds.py)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from service.models import Report
from service.store.base import run_update, start_write


def get_report(session: Session, report_id: str, *, with_html: bool = True) -> Report | None:
    """The report; with_html=False leaves its HTML page (about 30 times the size of its JSON) unread
    until it is used."""
    options = () if with_html else (defer(Report.html),)
    return session.get(Report, report_id, options=options)


def save_report(session: Session, report_id: str, *, content: dict[str, Any], html: str) -> None:
    """Store the evaluation's JSON and HTML; then call mark_succeeded("evaluate", report_id)."""
    start_write(session)
    run_update(session, sa.update(Report).where(Report.id == report_id).values(content=content, html=html))
    session.commit()
