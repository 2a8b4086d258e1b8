"""Domain records → browser events, driven by a declarative mapping. Pure: no I/O
beyond reading the mapping file it is given."""

from herald.adapter.adapter import Adapter, PoisonRecord, decode_record
from herald.adapter.loading import MappingInvalid, default_mapping, load_mapping, parse_mapping
from herald.adapter.rules import ErrorSpec, MappingTable, Rule

__all__ = [
    "Adapter",
    "ErrorSpec",
    "MappingInvalid",
    "MappingTable",
    "PoisonRecord",
    "Rule",
    "decode_record",
    "default_mapping",
    "load_mapping",
    "parse_mapping",
]
