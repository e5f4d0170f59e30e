"""`/openapi.json` describes every route, and what the routes really answer matches it.

The document must validate as OpenAPI 3.1; every route in `app.routes` is in it (or hidden on
purpose, `openapi_docs.HIDDEN`) with a summary, tags and the error envelope; routes that need a
key declare a security scheme and 401, and really answer 401 without one; the catalog's model
schemas are the ones `/v1/model-schema` answers; real answers of real calls validate against the
schemas of their status; `/docs` and `/redoc` load nothing from another origin.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Mount, Route

from tests.conftest import ImageServer, auth, png_bytes
from vidgate import catalog
from vidgate.api import create_app, docs_ui, openapi_docs
from vidgate.api.openapi_models import error_types
from vidgate.config import Settings
from vidgate.errors import ApiError

ADMIN = "openapi-admin-token"
SPEC_URI = "urn:vidgate:openapi"
#: Response headers whose presence the document must announce for that status.
WATCHED = {
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "idempotency-replayed",
    "preference-applied",
    "x-apimart-response-version",
}
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.admin_token = ADMIN
    return settings


@pytest.fixture(scope="module")
def app_and_spec(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """An app with every optional router on; the document needs no lifespan."""
    configured = Settings(data_dir=tmp_path_factory.mktemp("spec"), admin_token=ADMIN, metrics=True)
    app = create_app(configured, run_worker=False)
    return app, app.openapi()


@pytest.fixture(scope="module")
def spec(app_and_spec: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
    return app_and_spec[1]


# --- the document ----------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any], client: TestClient) -> None:
    assert spec["openapi"].startswith("3.1")
    validate_spec(spec)
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json()["paths"].keys() == spec["paths"].keys()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _schema_ref(response: dict[str, Any]) -> str | None:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref")
    return ref if isinstance(ref, str) else None


def test_every_route_is_documented_or_hidden_on_purpose(app_and_spec: tuple[Any, dict[str, Any]]) -> None:
    app, spec = app_and_spec
    seen: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):  # included routers flattened
        assert route.path is not None, route
        if isinstance(route.original_route, Mount) or not getattr(route, "include_in_schema", True):
            assert route.path in openapi_docs.HIDDEN, f"{route.path} is hidden without a reason in HIDDEN"
            continue
        assert isinstance(route.original_route, Route | APIRoute), route
        path = _CONVERTOR.sub(r"{\1}", route.path)
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette adds HEAD to every GET route
        for method in methods:
            assert method.lower() in spec["paths"].get(path, {}), f"{method} {path} is not documented"
            seen.add((path, method.lower()))
    documented = {(path, method) for path, method, _ in _operations(spec)}
    assert documented == seen, "the document names routes that do not exist"


def test_every_operation_has_summary_tags_and_the_error_envelope(spec: dict[str, Any]) -> None:
    declared = {tag["name"] for tag in spec["tags"]}
    assert all(tag.get("description") for tag in spec["tags"])
    for path, method, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert operation.get("description"), where
        assert operation.get("tags") and set(operation["tags"]) <= declared, where
        statuses = [s for s in operation["responses"] if s[0] in "45"]
        envelope = [s for s in statuses if _schema_ref(operation["responses"][s])]
        assert envelope, f"{where} documents no error in the envelope"
        for status in envelope:  # a 503 of a health probe is its own body; a client error never is
            if status.startswith("4"):
                assert _schema_ref(operation["responses"][status]) == "#/components/schemas/ErrorEnvelope"
        assert "422" not in operation["responses"], f"{where}: validation errors are 400s here"
        if operation.get("security"):
            assert "401" in operation["responses"], f"{where} needs credentials but documents no 401"
        assert any(s.startswith("2") for s in operation["responses"]), where


def test_the_error_envelope_mirrors_errors_py(spec: dict[str, Any]) -> None:
    body = spec["components"]["schemas"]["ErrorBody"]
    assert set(body["properties"]["type"]["enum"]) == set(error_types())
    assert set(body["required"]) == {"code", "message", "type"}
    classes: list[type[ApiError]] = []
    pending = [ApiError]
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending.extend(cls.__subclasses__())
    for cls in classes:
        response = openapi_docs.errors(cls.status)[cls.status]  # KeyError: a status without a doc
        assert response["description"].startswith(f"`{cls.type}`"), cls
        example = response["content"]["application/json"]["example"]["error"]
        assert example["code"] == cls.status and example["type"] == cls.type
    too_many = spec["paths"]["/v1/videos/generations"]["post"]["responses"]["429"]
    assert "Retry-After" in too_many["headers"]


def test_credentials_are_declared_where_they_are_needed(
    app_and_spec: tuple[Any, dict[str, Any]], client: TestClient
) -> None:
    """Each operation called without credentials: 401 exactly where it declares a scheme."""
    spec = app_and_spec[1]
    bare = TestClient(client.app, raise_server_exceptions=False)  # the gateway is client's
    for path, method, operation in _operations(spec):
        url = re.sub(r"\{\w+\}", "x", path)
        answer = bare.request(method.upper(), url)
        needs_key = bool(operation.get("security"))
        assert (answer.status_code == 401) == needs_key, (method, path, answer.status_code, answer.text)
    schemes = spec["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer"}


def test_catalog_models_are_components_equal_to_model_schema(
    spec: dict[str, Any], client: TestClient
) -> None:
    schemas = spec["components"]["schemas"]
    body = spec["paths"]["/v1/videos/generations"]["post"]["requestBody"]["content"]["application/json"]
    refs = [item["$ref"] for item in body["schema"]["oneOf"]]
    assert refs == [f"#/components/schemas/{name}" for name in catalog.MODELS]
    assert body["schema"]["discriminator"]["mapping"] == dict(zip(catalog.MODELS, refs, strict=True))
    for name in catalog.MODELS:
        answer = client.get("/v1/model-schema", params={"model": name})
        assert answer.status_code == 200
        component = dict(schemas[name])
        own = {k: v for k, v in component["properties"].items() if not v.get("x-vidgate-extension")}
        assert own.keys() < component["properties"].keys()  # the submit extensions are there too
        assert {**component, "properties": own} == answer.json()["input_schema"]


# --- real answers against the document -------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _validator(spec: dict[str, Any], *parts: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": SPEC_URI + _pointer(*parts)}, registry=registry)


def conforms(spec: dict[str, Any], answer: httpx.Response, path: str, method: str = "get") -> None:
    """The status is documented for the operation, and so are the body's type, its shape (JSON is
    validated against the schema) and the watched headers it carries."""
    operation = spec["paths"][path][method]
    status = str(answer.status_code)
    where = f"{method.upper()} {path} -> {status}: {answer.text[:300]}"
    assert status in operation["responses"], where
    documented = operation["responses"][status]
    headers = {name.lower() for name in documented.get("headers", {})}
    for name in WATCHED & set(answer.headers.keys()):
        assert name in headers, f"{where}: header {name} is not documented"
    if method == "head" or not answer.content:
        return
    kind = answer.headers["content-type"].split(";")[0]
    assert kind in documented.get("content", {}), f"{where}: {kind} is not documented"
    if kind == "application/json":
        parts = ("paths", path, method, "responses", status, "content", kind, "schema")
        errors = [e.message for e in _validator(spec, *parts).iter_errors(answer.json())]
        assert not errors, f"{where}: {errors}"


def valid_submit(spec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    parts = ("paths", "/v1/videos/generations", "post", "requestBody", "content", "application/json")
    errors = [e.message for e in _validator(spec, *parts, "schema").iter_errors(body)]
    assert not errors, errors
    return body


def test_task_routes_answer_what_they_document(spec: dict[str, Any], client: TestClient) -> None:
    body = valid_submit(spec, {"model": "pixverse-v6", "prompt": "a kite", "duration": 1})
    legacy = client.post("/v1/videos/generations", json=body)
    conforms(spec, legacy, "/v1/videos/generations", "post")
    task_id = legacy.json()["data"][0]["task_id"]
    newer = {"X-APIMart-Response-Version": "2026-07-27", "Idempotency-Key": "openapi-1"}
    for _ in range(2):  # the second is a replay
        answer = client.post("/v1/videos/generations", json=body, headers=newer)
        conforms(spec, answer, "/v1/videos/generations", "post")
    assert answer.headers["idempotency-replayed"] == "true"
    with_callback = valid_submit(spec, {**body, "callback_url": "https://example.com/hook"})
    bad = {"model": "pixverse-v6", "prompt": "x", "duration": 99}
    for other in (with_callback, bad):
        conforms(spec, client.post("/v1/videos/generations", json=other), "/v1/videos/generations", "post")
    for headers in ({}, {"X-APIMart-Response-Version": "2026-07-27"}):
        conforms(spec, client.get(f"/v1/tasks/{task_id}", headers=headers), "/v1/tasks/{task_id}")
    conforms(spec, client.get("/v1/tasks/task_nope"), "/v1/tasks/{task_id}")
    conforms(spec, client.get("/v1/tasks/x?language=xx"), "/v1/tasks/{task_id}")
    conforms(spec, client.get("/v1/tasks", params={"limit": 2}), "/v1/tasks")
    conforms(spec, client.get("/v1/tasks", params={"limit": 0}), "/v1/tasks")
    for _ in range(2):  # the second is a 409: already cancelled
        answer = client.post(f"/v1/tasks/{task_id}/cancel")
        conforms(spec, answer, "/v1/tasks/{task_id}/cancel", "post")
    assert answer.status_code == 409
    conforms(spec, client.get("/v1/tasks", headers=auth("vg_wrong")), "/v1/tasks")


def test_uploads_files_discovery_balance_and_health(spec: dict[str, Any], client: TestClient) -> None:
    upload = client.post("/v1/uploads/images", files={"file": ("a.png", png_bytes((1, 2, 3)), "image/png")})
    conforms(spec, upload, "/v1/uploads/images", "post")
    junk = client.post("/v1/uploads/images", files={"file": ("a.png", b"not an image", "image/png")})
    conforms(spec, junk, "/v1/uploads/images", "post")
    link = httpx.URL(upload.json()["url"])
    conforms(spec, client.get(link.raw_path.decode()), "/files/{key}")
    conforms(spec, client.head(link.raw_path.decode()), "/files/{key}", "head")
    conforms(spec, client.get(link.path + "?expires=1&sig=x"), "/files/{key}")
    conforms(spec, client.get("/v1/models"), "/v1/models")
    conforms(spec, client.get("/v1/model-schema?model=viduq3"), "/v1/model-schema")
    conforms(spec, client.get("/v1/model-schema?model=nope"), "/v1/model-schema")
    conforms(spec, client.get("/v1/model-docs?model=pixverse-v6"), "/v1/model-docs")
    conforms(spec, client.get("/v1/model-docs?model=pixverse-v6&format=markdown"), "/v1/model-docs")
    conforms(spec, client.get("/v1/balance"), "/v1/balance")
    conforms(spec, client.get("/v1/user/balance"), "/v1/user/balance")
    conforms(spec, client.get("/healthz"), "/healthz")
    conforms(spec, client.get("/readyz"), "/readyz")
    conforms(spec, client.post("/v1/callbacks/nope", json={}), "/v1/callbacks/{provider}", "post")


def test_admin_routes_and_rate_limits_answer_what_they_document(
    spec: dict[str, Any], client: TestClient
) -> None:
    admin = auth(ADMIN)
    created = client.post("/admin/keys", json={"name": "limited", "rpm": 1, "balance": "2"}, headers=admin)
    conforms(spec, created, "/admin/keys", "post")
    key_id, secret = created.json()["id"], created.json()["secret"]
    first = client.get("/v1/balance", headers=auth(secret))  # the key has an rpm of 1
    conforms(spec, first, "/v1/balance")
    assert "x-ratelimit-limit" in first.headers
    second = client.get("/v1/balance", headers=auth(secret))
    assert second.status_code == 429 and "retry-after" in second.headers
    conforms(spec, second, "/v1/balance")
    conforms(spec, client.post("/admin/keys", json={"nam": "x"}, headers=admin), "/admin/keys", "post")
    conforms(spec, client.get("/admin/keys", headers=admin), "/admin/keys")
    conforms(spec, client.get(f"/admin/keys/{key_id}", headers=admin), "/admin/keys/{key_id}")
    conforms(spec, client.get("/admin/keys/key_nope", headers=admin), "/admin/keys/{key_id}")
    patched = client.patch(f"/admin/keys/{key_id}", json={"max_in_flight": 3}, headers=admin)
    conforms(spec, patched, "/admin/keys/{key_id}", "patch")
    top_up = client.post(f"/admin/keys/{key_id}/top-up", json={"amount": 1.5}, headers=admin)
    conforms(spec, top_up, "/admin/keys/{key_id}/top-up", "post")
    conforms(spec, client.get(f"/admin/keys/{key_id}/ledger", headers=admin), "/admin/keys/{key_id}/ledger")
    for path in spec["paths"]:  # revoke, and routes added to the admin API later, too
        if path.startswith("/admin/keys/{key_id}/") and "post" in spec["paths"][path]:
            answer = client.post(path.replace("{key_id}", key_id), headers=admin)
            conforms(spec, answer, path, "post")


@pytest.mark.timeout(120)
def test_finished_tasks_answer_what_they_document(
    spec: dict[str, Any], worker_client: TestClient, image_server: ImageServer
) -> None:
    """A completed task (result, video facts, thumbnail) and a failed one (error) in both versions."""
    done = {"model": "pixverse-v6", "prompt": "a kite", "duration": 1, "resolution": "360p"}
    missing = image_server.base + "/missing.png"
    failed = {"model": "viduq3", "prompt": "a kite", "image_urls": [missing], "duration": 3}
    ids = [
        worker_client.post("/v1/videos/generations", json=valid_submit(spec, b)).json()["data"][0]["task_id"]
        for b in (done, failed)
    ]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = [worker_client.get(f"/v1/tasks/{i}").json()["data"]["status"] for i in ids]
        if states == ["completed", "failed"]:
            break
        assert not set(states) & {"cancelled"} and states[0] != "failed", states
        time.sleep(0.2)
    assert states == ["completed", "failed"]
    for task_id in ids:
        for headers in ({}, {"X-APIMart-Response-Version": "2026-07-27"}):
            answer = worker_client.get(f"/v1/tasks/{task_id}", headers=headers)
            conforms(spec, answer, "/v1/tasks/{task_id}")
    data = worker_client.get(f"/v1/tasks/{ids[0]}").json()["data"]
    assert data["result"]["videos"][0]["url"] and data["result"]["thumbnail_url"]
    assert worker_client.get(f"/v1/tasks/{ids[1]}").json()["data"]["error"]["code"]
    conforms(spec, worker_client.get("/v1/tasks"), "/v1/tasks")


# --- /docs and /redoc ------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url", "data-openapi-url") and value:
                self.links.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_load_everything_from_this_origin(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self'" in policy
    assert "<script>" not in answer.text  # no inline script: the policy would block it
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", answer.text), "a link to another origin"
    parser = _Links()
    parser.feed(answer.text)
    assert any(link.endswith(".js") for link in parser.links)
    for link in parser.links:
        assert link.startswith("/") and not link.startswith("//"), link
        asset = client.get(link)
        assert asset.status_code == 200, link
        assert len(asset.content) > 100, link
    missing = client.get(f"{docs_ui.ASSETS}/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_doc_assets_are_the_packaged_swagger_ui_and_redoc(client: TestClient) -> None:
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert b"SwaggerUIBundle" in bundle.content
    assert b"Redoc" in client.get("/docs/assets/redoc.standalone.js").content
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    init = client.get("/docs/assets/swagger-init.js")
    assert b"data-openapi-url" in init.content and b"validatorUrl: null" in init.content


def test_docs_follow_the_root_path(settings: Settings, database: Any, api_key: str) -> None:
    """Behind a proxy that mounts vidgate under a prefix, the page links stay under it."""
    app = create_app(settings, run_worker=False)
    with TestClient(app, root_path="/gateway") as client:
        page = client.get("/docs").text
    assert 'data-openapi-url="/gateway/openapi.json"' in page
    assert 'src="/gateway/docs/assets/swagger-ui-bundle.js"' in page


def test_api_md_names_the_documents() -> None:
    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    for url in ("/openapi.json", "/docs", "/redoc"):
        assert f"`{url}`" in text
