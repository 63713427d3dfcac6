"""The form of POST /v1/reports: its OpenAPI description, the flags, the what-if, and `RequestError`, the 4xx a
route answers with `{"error": message}`. No model: the service (`serve/app.py`) checks names against it."""

from __future__ import annotations

import json
from typing import Any

MAX_WHAT_IF_CHARS = 4096  # a what-if names at most the model's experts: a few hundred characters


class RequestError(Exception):
    """A bad request: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def upload_schema(max_views: int) -> dict[str, Any]:
    """The OpenAPI description of the multipart body of POST /v1/reports (read by hand, so written by hand)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": f"1 to {max_views} views of one study (PNG, JPEG, DICOM), "
                                "frontal first",
                            },
                            "evidence": {"type": "string", "enum": ["false", "true", "full"]},
                            "preview": {"type": "string", "enum": ["false", "true"]},
                            "expert_probs": {
                                "type": "string",
                                "description": 'a what-if, a JSON object {"expert name": p in [0, 1]} for some '
                                "experts: the decoder reads these p, the other experts keep the model's own",
                            },
                        },
                    }
                }
            },
        }
    }


def evidence_flag(value: Any) -> bool | str:
    """A form's `evidence` (or `preview`) field -> False, True or "full"; a RequestError for anything else."""
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    if text == "full":
        return "full"
    raise RequestError(400, f"evidence is {str(value)[:40]!r}; expected true, false or full")


def upload_name(upload, index: int) -> str:
    """`images #2 ("lateral.dcm")` for messages; the client's file name is shown, never used."""
    name = (getattr(upload, "filename", None) or "").replace("\\", "/").rsplit("/", 1)[-1][:80]
    return f'images #{index} ("{name}")' if name else f"images #{index}"


def what_if(value: Any) -> dict[str, Any] | None:
    """A form's `expert_probs` field (JSON text of {name: p}) -> that dict, None when absent or "{}"; names and
    values are checked by `ReportGenerator.check_expert_probs`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise RequestError(400, 'expert_probs is a file; expected a text field, JSON {"expert name": p}')
    if len(value) > MAX_WHAT_IF_CHARS:
        raise RequestError(
            400, f"expert_probs has {len(value)} characters; expected at most {MAX_WHAT_IF_CHARS}"
        )
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise RequestError(
            400, f'expert_probs is {value[:60]!r}; expected a JSON object {{"expert name": p in [0, 1]}}'
        )
    return parsed or None
