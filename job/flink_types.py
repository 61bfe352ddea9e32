"""Flink row types of the records that travel between the job's operators."""

from __future__ import annotations

from pyflink.common import Types
from pyflink.common.typeinfo import TypeInformation

from udfs.records import EVENT_FIELDS


def event_type() -> TypeInformation:
    """Impressions and clicks as one row type (udfs.records.EVENT_FIELDS)."""
    return Types.ROW_NAMED(
        list(EVENT_FIELDS),
        [Types.INT(), *[Types.STRING()] * 5, Types.INT(), Types.LONG(), Types.PICKLED_BYTE_ARRAY()],
    )
