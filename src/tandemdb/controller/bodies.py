"""One schema per body and query of the control API, and the one way to check them.

Each is a pydantic model: strict (a string is never a number, `true` is never 1), closed
(an unknown field is refused) and bounded (every number has a range, every string a
length), so no value a client sends reaches a record, a node or a float conversion
unchecked: a 400-digit `rpo_limit_seconds` once broke every node's heartbeat (issue 9).
`parse` turns a model's first complaint into the 400 `bad_request` the API always gives,
naming the field and what to send instead; `documented` puts the same schemas into the
controller's OpenAPI description (`GET /openapi.json`). Nothing here knows the deployment:
checks that need it (a region that exists, a webhook target that is not private) are made
by the caller after `parse`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tandemdb.common.http import ApiError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,62}")
MAX_ID = 2**63 - 1  # event ids and store revisions are SQLite integers
MAX_WAIT = 86_400.0  # long polls accept up to a day; each endpoint waits at most its own cap
MAX_URL = 2048
MIN_SECRET, MAX_SECRET = 16, 512
MAX_WEBHOOK_ENVIRONMENTS = 1000
MAX_OPERATIONS_LISTED = 5000  # operations.MAX_LIST
MAX_PARALLELISM = 256
MAX_CATCH_UP = 30.0  # what a node's wait call allows at most
MIN_RPO, MAX_RPO = 1, 86_400
DEFAULT_RPO_LIMIT_SECONDS = 900

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,62}$", max_length=63)]
Mode = Literal["planned", "forced"]
MODE_DOC = "planned (both regions up, no data loss) or forced (the primary's region is lost)"


# A JSON number within bounds: an int stays an int, as clients sent it and records keep it;
# a float must be finite.
RpoSeconds = (Annotated[int, Field(ge=MIN_RPO, le=MAX_RPO)]
              | Annotated[float, Field(ge=MIN_RPO, le=MAX_RPO, allow_inf_nan=False)])
CatchUpSeconds = (Annotated[int, Field(gt=0, le=MAX_CATCH_UP)]
                  | Annotated[float, Field(gt=0, le=MAX_CATCH_UP, allow_inf_nan=False)])


class Schema(BaseModel):
    """A request body: strict and closed. `EXAMPLE` shows its shape in errors."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    WHAT: ClassVar[str] = "this call"
    EXAMPLE: ClassVar[str] = "{}"
    EMPTY_OK: ClassVar[bool] = False  # an empty body reads as {} (all fields have defaults)
    KIND: ClassVar[str] = "field"


class Query(Schema):
    """Query parameters: text that must parse as their types, with the same bounds."""

    model_config = ConfigDict(strict=False, extra="forbid", frozen=True)
    KIND: ClassVar[str] = "parameter"


# -- bodies ----------------------------------------------------------------------------


class CreateEnvironment(Schema):
    """`POST /v1/environments`."""

    WHAT: ClassVar[str] = "POST /v1/environments"
    EXAMPLE: ClassVar[str] = '{"name": "acme"}'
    name: Name = Field(title="environment name", description=(
        "2 to 63 characters, lowercase letters, digits and '-', starting with a letter"))
    type: Literal["production", "sandbox", "basic"] = Field(
        "production", title="environment type", description=(
            "production (a geo-secondary in the paired region), sandbox or basic"))
    region: str | None = Field(None, min_length=1, max_length=63, title="region",
                               description="the home region (default: the first region)")
    rpo_limit_seconds: RpoSeconds = Field(
        DEFAULT_RPO_LIMIT_SECONDS, description=(
            f"a number of seconds from {MIN_RPO} to {MAX_RPO} (a day): while the "
            "geo-secondary lags more, writes are refused"))


class EnvironmentFailover(Schema):
    """`POST /v1/environments/{env}/failover`."""

    WHAT: ClassVar[str] = "a failover"
    EXAMPLE: ClassVar[str] = '{"mode": "planned"}'
    EMPTY_OK: ClassVar[bool] = True
    mode: Mode = Field("planned", description=MODE_DOC)
    catch_up_timeout: CatchUpSeconds = Field(
        10.0, description=f"the seconds (above 0, at most {MAX_CATCH_UP:g}) the secondary "
                          "has to reach the final lsn")
    to: Name | None = Field(None, description=(
        "the node of the secondary to promote (planned only), e.g. the local secondary for a "
        "switchover within the region; default: the geo-secondary in the pair"))


class SyncChange(Schema):
    """`POST /internal/v1/environments/{env}/sync`, from a primary (docs/ha.md)."""

    WHAT: ClassVar[str] = "a sync change"
    EXAMPLE: ClassVar[str] = ('{"node": "west-2", "sync": false, "epoch": 3, '
                              '"primary": "west-1"}')
    node: str = Field(min_length=1, max_length=63, description="the local replica's node")
    sync: bool = Field(description="true: the primary waits for it again; false: no more")
    epoch: int = Field(ge=1, le=MAX_ID, description="the primary's epoch")
    primary: str = Field(min_length=1, max_length=63, description="the calling node")


class RegionFailback(Schema):
    """`POST /v1/regions/{region}/failback`."""

    WHAT: ClassVar[str] = "a region failback"
    EXAMPLE: ClassVar[str] = '{"parallelism": 32}'
    EMPTY_OK: ClassVar[bool] = True
    parallelism: int = Field(32, ge=1, le=MAX_PARALLELISM, description=(
        f"how many environments move at a time, from 1 to {MAX_PARALLELISM}"))


class RegionFailover(RegionFailback):
    """`POST /v1/regions/{region}/failover`."""

    WHAT: ClassVar[str] = "a region failover"
    EXAMPLE: ClassVar[str] = '{"mode": "planned", "parallelism": 32}'
    mode: Mode = Field("planned", description=MODE_DOC)


class NodeDrain(Schema):
    """`POST /v1/nodes/{node}/drain`."""

    WHAT: ClassVar[str] = "a node drain"
    EXAMPLE: ClassVar[str] = '{"parallelism": 8}'
    EMPTY_OK: ClassVar[bool] = True
    parallelism: int = Field(8, ge=1, le=MAX_PARALLELISM, description=(
        f"how many primaries move at a time, from 1 to {MAX_PARALLELISM}"))


class RegisterWebhook(Schema):
    """`POST /v1/webhooks`."""

    WHAT: ClassVar[str] = "POST /v1/webhooks"
    EXAMPLE: ClassVar[str] = '{"url": "https://…", "secret": "…"}'
    url: str = Field(max_length=MAX_URL, description=(
        "the http(s) URL that receives the events, e.g. https://example.com/tandem-events "
        f"(at most {MAX_URL} characters)"))
    secret: str = Field(min_length=MIN_SECRET, max_length=MAX_SECRET, description=(
        f"a string of at least {MIN_SECRET} characters (at most {MAX_SECRET}); it signs "
        "every delivery (X-Tandem-Signature)"))
    environments: list[Name] | None = Field(
        None, min_length=1, max_length=MAX_WEBHOOK_ENVIRONMENTS, description=(
            f"a non-empty list of up to {MAX_WEBHOOK_ENVIRONMENTS} environment names, or "
            "null for the events of all environments"))

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.isprintable() or " " in url:
            raise ValueError("spaces or control characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host")
        _ = parts.port  # ValueError when the port is not a number from 0 to 65535
        return url


# -- queries ---------------------------------------------------------------------------


class EventsQuery(Query):
    """`GET /v1/events`."""

    WHAT: ClassVar[str] = "GET /v1/events"
    after: int = Field(0, ge=0, le=MAX_ID, description=(
        "the id of the last event you have (0 or more)"))
    wait: float = Field(0.0, ge=0, le=MAX_WAIT, allow_inf_nan=False, description=(
        "the seconds to wait for a new event (a finite number from 0; at most 30 are "
        "waited)"))


class OperationsQuery(Query):
    """`GET /v1/operations`."""

    WHAT: ClassVar[str] = "GET /v1/operations"
    limit: int = Field(20, ge=1, le=MAX_OPERATIONS_LISTED, description=(
        f"a number of operations from 1 to {MAX_OPERATIONS_LISTED}"))
    parent: str | None = Field(None, pattern=r"^op-[0-9]{6,18}$", max_length=21, description=(
        "an operation id such as op-000012: only the operations it started"))


class OperationWait(Query):
    """`GET /v1/operations/{id}`."""

    WHAT: ClassVar[str] = "GET /v1/operations/{id}"
    wait: float = Field(0.0, ge=0, le=MAX_WAIT, allow_inf_nan=False, description=(
        "the seconds to wait for the operation to end (a finite number from 0; at most 60 "
        "are waited)"))


class RoutingQuery(Query):
    """`GET /internal/v1/routing` (the gateway's long poll)."""

    WHAT: ClassVar[str] = "GET /internal/v1/routing"
    after: int | None = Field(None, ge=0, le=MAX_ID, description=(
        "the store revision of the table you have; none for the whole table"))
    wait: float = Field(0.0, ge=0, le=MAX_WAIT, allow_inf_nan=False, description=(
        "the seconds to wait for a change (a finite number from 0; at most 60 are waited)"))


# -- checking and describing -----------------------------------------------------------

S = TypeVar("S", bound=Schema)
MISSING = object()
SHOWN = 60  # characters of a refused value quoted back


def parse(schema: type[S], data: Any) -> S:
    """`data` (a JSON body, or the query parameters) as `schema`; 400 with what to fix."""
    if data is None and schema.EMPTY_OK:
        data = {}
    if not isinstance(data, dict):
        raise bad(f"the body must be a JSON object such as {schema.EXAMPLE}")
    unknown = [key for key in data if key not in schema.model_fields]
    if unknown:
        raise bad(f"unknown {schema.KIND}(s) {', '.join(sorted(map(shown_key, unknown)))}"
                  f": {schema.WHAT} takes {listing(list(schema.model_fields))}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        raise bad(complaint(schema, field, data.get(field, MISSING))) from None


def complaint(schema: type[Schema], field: str, value: Any) -> str:
    """`invalid <field> <value>: <what to give>`; a secret's value is never quoted."""
    info = schema.model_fields[field]
    label = info.title or field
    if value is MISSING:
        label += " (missing)"
    elif field != "secret":
        label += " " + shown(value)
    return f"invalid {label}: give {info.description}"


def shown(value: Any) -> str:
    """A refused value as the error quotes it: its repr, cut short when long."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python prints
        return "(an integer too large to print)"
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text)} characters)"


def shown_key(key: str) -> str:
    """An unknown field's name as the error quotes it: as is, unless long or odd."""
    return key if NAME_PATTERN.fullmatch(key.replace("_", "-")) else shown(key)


def listing(names: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def documented(body: type[Schema] | None = None, query: type[Query] | None = None) -> dict:
    """A route's `openapi_extra`: its body schema and its query parameters."""
    extra: dict[str, Any] = {}
    if body is not None:
        extra["requestBody"] = {"required": not body.EMPTY_OK, "content": {
            "application/json": {"schema": body.model_json_schema()}}}
    if query is not None:
        properties = query.model_json_schema()["properties"]
        extra["parameters"] = [
            {"name": name, "in": "query", "required": info.is_required(),
             "description": info.description, "schema": properties[name]}
            for name, info in query.model_fields.items()]
    return extra
