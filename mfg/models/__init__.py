"""SQLAlchemy 2 typed models. Importing this package registers every table on ``Base.metadata``."""

from .audit import AuditCheckpoint, AuditEntry, AuditHead
from .base import Audited, Base, Signable, UTCDateTime, utcnow
from .batch import Batch, BatchMasterRecord, Deviation, RecordedValue, SignatureInvalidation, StepExecution
from .clinical import Donor, DonorTest, Subject
from .custody import CustodyEvent, ProductBag
from .masterdata import Counter, Equipment, MaterialLot
from .outbox import DocumentJob
from .qualification import QualificationRecord
from .quality import BagBlock, BatchDecision, ClinicalAlert, DocumentRevision, PendingResult, ReviewMark
from .sign_in import PasswordHistory, UserSession
from .signature import Signature, SignatureSeal
from .sop import SopVersion
from .submission import FormSubmission
from .trial import DltEvent, EscalationDecision, LedgerDocument, ScreeningFinding, SubjectScreening
from .user import RoleGrant, User

# Record types that carry e-signatures, by the name a Signature stores in ``record_type``.
SIGNABLE: dict[str, type[Signable]] = {
    model.__tablename__: model
    for model in (SopVersion, StepExecution, Subject, CustodyEvent, Deviation, BatchDecision, DocumentRevision,
                  PendingResult, ClinicalAlert, SubjectScreening, DltEvent, EscalationDecision)}

__all__ = ["AuditCheckpoint", "AuditEntry", "AuditHead", "Audited",
           "Base", "Batch", "BatchDecision", "DocumentJob", "DocumentRevision",
           "FormSubmission", "PasswordHistory", "UserSession",
           "ReviewMark", "RoleGrant", "BagBlock", "ClinicalAlert", "PendingResult",
           "BatchMasterRecord", "Counter", "DltEvent", "EscalationDecision", "ScreeningFinding",
           "SubjectScreening", "CustodyEvent", "Deviation", "Donor", "DonorTest",
           "Equipment", "LedgerDocument", "MaterialLot", "ProductBag", "QualificationRecord", "RecordedValue",
           "SIGNABLE", "Signable",
           "Signature", "SignatureInvalidation", "SignatureSeal",
           "SopVersion", "StepExecution", "Subject", "UTCDateTime", "User", "utcnow"]
