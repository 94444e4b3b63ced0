"""SQLAlchemy models, one concept per module. Importing this package registers them all on Base."""
from promptehr.service.models.api_key import ApiKey
from promptehr.service.models.base import Base, JobStatus
from promptehr.service.models.cohort import Cohort
from promptehr.service.models.cohort_patient import CohortPatient
from promptehr.service.models.cohort_shard import CohortShard
from promptehr.service.models.dataset import Dataset
from promptehr.service.models.idempotency_key import IdempotencyKey
from promptehr.service.models.model import Model
from promptehr.service.models.report import Report
from promptehr.service.models.training_job import TrainingJob
from promptehr.service.models.worker import Worker

__all__ = [
    "ApiKey",
    "Base",
    "Cohort",
    "CohortPatient",
    "CohortShard",
    "Dataset",
    "IdempotencyKey",
    "JobStatus",
    "Model",
    "Report",
    "TrainingJob",
    "Worker",
]
