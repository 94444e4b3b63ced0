"""Reports: the JSON of a cohort's evaluation, or its HTML page; deleting one."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from promptehr.service import store
from promptehr.service.deps import SessionDep, TenantDep
from promptehr.service.models.base import JobStatus
from promptehr.service.problems import Problem
from promptehr.service.schemas.common import problem_responses
from promptehr.service.schemas.reports import ReportPublic

router = APIRouter(prefix="/reports", tags=["reports"])


def _finished(session, report_id: str, *, tenant: str | None, html: bool = True):
    report = store.get_report(session, report_id, with_html=html, tenant=tenant)
    if report is None or report.status != JobStatus.succeeded.value or report.content is None:
        raise Problem(404, f"No report {report_id}.", type="not-found")
    return report


def _quality(accept: str, media: str) -> float:
    best = 0.0
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        kind = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if kind == media:
            return q
        if kind in (media.split("/")[0] + "/*", "*/*"):
            best = max(best, q * 0.99)  # an exact match beats a wildcard of the same q
    return best


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if "text/html" not in accept.lower():
        return False
    return _quality(accept, "text/html") > _quality(accept, "application/json")


@router.get(
    "/{report_id}.html",
    response_class=HTMLResponse,
    summary="A report as a self-contained HTML page",
    responses=problem_responses(401, 404),
)
def get_report_html(report_id: str, session: SessionDep, tenant: TenantDep):
    return HTMLResponse(_finished(session, report_id, tenant=tenant).html or "")


@router.get(
    "/{report_id}",
    response_model=ReportPublic,
    summary="A report (JSON; HTML with Accept: text/html)",
    responses={200: {"content": {"text/html": {}}}, **problem_responses(401, 404)},
)
def get_report(request: Request, report_id: str, session: SessionDep, tenant: TenantDep):
    html = wants_html(request)
    report = _finished(session, report_id, tenant=tenant, html=html)
    if html:
        return HTMLResponse(report.html or "")
    return JSONResponse(report.content)


@router.delete(
    "/{report_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a report",
    description="The report of a finished evaluation; its cohort stays (without `report_id`). A report "
    "still being made answers 409.",
    responses=problem_responses(401, 404, 409),
)
def delete_report(report_id: str, session: SessionDep, tenant: TenantDep):
    if store.get_report(session, report_id, with_html=False, tenant=tenant) is None:
        raise Problem(404, f"No report {report_id}.", type="not-found")
    try:
        deleted = store.delete_report(session, report_id)
    except store.InUse as e:
        raise Problem(409, str(e), type="in-use") from None
    if not deleted:
        raise Problem(404, f"No report {report_id}.", type="not-found")
    return Response(status_code=204)
