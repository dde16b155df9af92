"""The OpenAPI document at /api/openapi.json describes every API route the app has, with its methods."""
from __future__ import annotations

import re

import pytest


@pytest.fixture
def document(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def openapi_path(rule: str) -> str:
    """/api/items/<item_id>/image -> /api/items/{item_id}/image."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_api_route_and_healthz_is_described_with_its_methods(app, document):
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule == "/healthz":
            routes[openapi_path(rule.rule)] = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes, "no API routes found"
    for path, methods in routes.items():
        assert path in document["paths"], f"{path} is not in the OpenAPI document"
        assert set(document["paths"][path]) == methods, path
    assert set(document["paths"]) == set(routes), "the document describes routes the app does not have"


def test_the_document_is_openapi_3_with_parameters_errors_and_resolvable_references(document):
    assert document["openapi"].startswith("3.1") and document["info"]["title"]
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"] and "200" in operation["responses"], (path, method)
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{([^}]+)}", path)), path
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
    for reference in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', str(document).replace("'", '"')):
        assert reference in schemas
    search = document["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert set(search) == {"image/*", "multipart/form-data"}
    assert set(search["multipart/form-data"]["schema"]["properties"]) == {"image"}
    # The settings are query parameters, the same that the server reads.
    from search_app.query import ITEM_SETTINGS, PHOTO_SETTINGS

    query = [p["name"] for p in document["paths"]["/api/search"]["post"]["parameters"] if p["in"] == "query"]
    assert query == list(PHOTO_SETTINGS)
    similar = document["paths"]["/api/items/{item_id}/similar"]["get"]["parameters"]
    assert [p["name"] for p in similar if p["in"] == "query"] == list(ITEM_SETTINGS)


def test_the_document_lists_the_catalogs_categories(document):
    from tests.search_app.conftest import CLASS_NAMES

    for path, method in (("/api/search", "post"), ("/api/items/{item_id}/similar", "get")):
        category = next(p for p in document["paths"][path][method]["parameters"] if p["name"] == "category")
        assert category["schema"]["enum"] == ["", *CLASS_NAMES]


def test_the_answer_of_a_search_has_the_documented_fields(client, document, catalog_images):
    from tests.search_app.conftest import encode, post_image

    answer = post_image(client, "/api/search", encode(catalog_images[0])).get_json()
    schema = document["components"]["schemas"]["SearchAnswer"]
    assert set(schema["required"]) <= set(answer) <= set(schema["properties"])
    result_schema = document["components"]["schemas"]["Result"]
    assert set(answer["results"][0]) == set(result_schema["properties"])
    health = client.get("/healthz").get_json()
    assert set(health) <= set(document["components"]["schemas"]["Health"]["properties"])
