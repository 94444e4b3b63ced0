"""The API side of the tenants' quotas (the counting is service/store/quotas.py): the limits the
settings give, the largest cohort a tenant can ever have queued, and the 429 a refusal answers."""
from __future__ import annotations

from fastapi import Request

from promptehr.service.problems import ProblemResponse, problem_response
from promptehr.service.settings import Settings
from promptehr.service.store.quotas import QuotaExceeded, QuotaLimits


def quota_limits(settings: Settings) -> QuotaLimits:
    return QuotaLimits(max_active_jobs=settings.max_active_jobs_per_tenant,
                       max_queued_patients=settings.max_queued_patients_per_tenant)


def max_cohort_patients(settings: Settings) -> int:
    """The largest `n_patients` of POST /cohorts: a cohort above the queued-patients quota could never
    be accepted, so it is a 422 (change the request), not a 429 (wait and retry)."""
    quota = settings.max_queued_patients_per_tenant
    return min(settings.max_cohort_patients, quota) if quota else settings.max_cohort_patients


async def on_quota_exceeded(request: Request, exc: QuotaExceeded) -> ProblemResponse:
    retry_after = request.app.state.settings.quota_retry_after_seconds
    return problem_response(
        request, 429, f"{exc}; retry when some of its jobs have finished.", type="quota-exceeded",
        headers={"Retry-After": str(retry_after)}, quota=exc.quota, limit=exc.limit, current=exc.current,
    )
