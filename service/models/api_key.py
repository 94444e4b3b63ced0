"""An API key: only its sha256 is stored; the key itself is shown once when created.

A key belongs to a tenant (the resources its tenant created are the only ones it sees); an admin key
sees every tenant's. A revoked key, or one past `expires_at`, is refused (401)."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, UTCDateTime, new_id, utcnow


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The first characters of the key, to tell keys apart in listings.
    prefix: Mapped[str] = mapped_column(sa.String(16))
    # Keys of one tenant share its resources (`promptehr apikey create --tenant`; default: the name).
    tenant: Mapped[str] = mapped_column(sa.String(200), index=True)
    is_admin: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def tenant_filter(self) -> str | None:
        """The tenant whose rows this key may see; None (no filter) for an admin key."""
        return None if self.is_admin else self.tenant
