"""Names users type and their ASCII forms: ``flux_contract.names``, re-exported."""

from __future__ import annotations

from flux_contract.names import (
    ENCODED_PREFIX,
    FILE_SUFFIX,
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    check_name,
    header_value,
    key_to_name,
    name_problem,
    name_to_key,
    normalize,
    parse_header_value,
)

__all__ = [
    "ENCODED_PREFIX",
    "FILE_SUFFIX",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "check_name",
    "header_value",
    "key_to_name",
    "name_problem",
    "name_to_key",
    "normalize",
    "parse_header_value",
]
