"""vicourse: the package behind the open course on variational inference.

Each chapter's algorithms live in one module; this module re-exports the public names.
See the course at the project's website and the API reference (``book/api.md``).
"""

from vicourse.runtime import check_environment

check_environment()

from vicourse import evidence, runtime  # noqa: E402
from vicourse.evidence import (  # noqa: E402
    ImportanceEstimate,
    gmm_log_evidence_exact,
    importance_log_evidence,
    normal_normal_log_evidence,
    normal_normal_posterior,
)

__version__ = "0.1.0"

__all__ = [
    "ImportanceEstimate",
    "evidence",
    "gmm_log_evidence_exact",
    "importance_log_evidence",
    "normal_normal_log_evidence",
    "normal_normal_posterior",
    "runtime",
]
