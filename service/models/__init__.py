"""SQLAlchemy models, one concept per module. Importing this package registers them all on Base."""
from service.models.api_key import ApiKey
from service.models.base import Base, JobStatus
from service.models.cohort import Cohort
from service.models.cohort_patient import CohortPatient
from service.models.cohort_shard import CohortShard
from service.models.dataset import Dataset
from service.models.idempotency_key import IdempotencyKey
from service.models.model import Model
from service.models.report import Report
from service.models.training_job import TrainingJob
from service.models.worker import Worker

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
