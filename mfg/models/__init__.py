"""SQLAlchemy 2 typed models. Importing this package registers every table on ``Base.metadata``."""

from .audit import AuditEntry, AuditHead
from .base import Audited, Base, Signable, UTCDateTime, utcnow
from .signature import Signature
from .sop import SopVersion
from .user import User

# Record types that carry e-signatures, by the name a Signature stores in ``record_type``.
SIGNABLE: dict[str, type[Signable]] = {SopVersion.__tablename__: SopVersion}

__all__ = ["AuditEntry", "AuditHead", "Audited", "Base", "SIGNABLE", "Signable", "Signature", "SopVersion",
           "UTCDateTime", "User", "utcnow"]
