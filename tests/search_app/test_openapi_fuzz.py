"""The API document against the server: schemathesis generates requests from the OpenAPI document (valid and
invalid ones) and runs all its checks on each answer: no 5xx; statuses, content types, headers and bodies
as documented; schema-valid requests accepted and invalid ones refused."""
from __future__ import annotations

import dataclasses
import io

import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image

from search_app.api import openapi_document
from tests.search_app.conftest import CLASS_NAMES

# Derandomised (a fixed seed) and bounded, so that the suite stays quick and a failure repeats.
EXAMPLES = 1000

# The document the test app serves (its categories listed), read at collection time.
schema = schemathesis.openapi.from_dict(openapi_document(tuple(CLASS_NAMES)))


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 32), (200, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


@schema.hook
def map_body(context, body):
    """A form's "image" holds an image: the document says so in words, which a JSON Schema cannot check
    (`format: binary` is any bytes), so the fuzzer is told here; bodies sent as image/* are images already."""
    fields = getattr(body, "body", body)  # a form, bare or with its parts' content types
    if not isinstance(fields, dict):
        return body
    changed = dict(fields)
    if "image" in fields:
        try:
            Image.open(io.BytesIO(getattr(fields["image"], "data", fields["image"]))).verify()
        except Exception:  # noqa: BLE001 (anything Pillow cannot read is replaced)
            changed["image"] = png()
    # A field whose value is null or an empty list is left out of the multipart body when it is encoded, so
    # a request meant to carry an unknown field would arrive without it: send it as an empty part.
    changed.update({name: "" for name, value in fields.items() if name != "image" and value in (None, [])})
    if changed == fields:
        return body
    return dataclasses.replace(body, body=changed) if dataclasses.is_dataclass(body) else changed


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_server_does_what_its_openapi_document_says(case, app):
    case.call_and_validate(app=app)
