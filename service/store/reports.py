"""Reports: a cohort's evaluation (a job of kind "evaluate"; see service/store/job_kinds.py)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from promptehr.service.models import Cohort, Report
from promptehr.service.models.base import TERMINAL_STATUSES
from promptehr.service.store.base import get_owned, run_update, start_write
from promptehr.service.store.lifecycle import InUse


def get_report(session: Session, report_id: str, *, with_html: bool = True, tenant: str | None = None) -> Report | None:
    """The report (of `tenant`; None: any); with_html=False leaves its HTML page (about 30 times the
    size of its JSON) unread until it is used."""
    options = () if with_html else (defer(Report.html),)
    return get_owned(session, Report, report_id, tenant, options=options)


def save_report(session: Session, report_id: str, *, content: dict[str, Any], html: str) -> None:
    """Store the evaluation's JSON and HTML; then call mark_succeeded("evaluate", report_id)."""
    start_write(session)
    run_update(session, sa.update(Report).where(Report.id == report_id).values(content=content, html=html))
    session.commit()


def delete_report(session: Session, report_id: str) -> bool:
    """Delete a finished report (its cohort stays, without a report_id). False: no such report.
    InUse while the evaluation is queued or running."""
    start_write(session)
    taken = run_update(session, sa.update(Report).where(Report.id == report_id, Report.status.in_(TERMINAL_STATUSES))
                       .values(cancel_requested=True))
    if taken != 1:
        session.rollback()
        if session.get(Report, report_id) is None:
            return False
        raise InUse("The report is still being made; cancel its cohort first (POST /cohorts/{id}/cancel).")
    run_update(session, sa.update(Cohort).where(Cohort.report_id == report_id).values(report_id=None))
    run_update(session, sa.delete(Report).where(Report.id == report_id))
    session.commit()
    return True
