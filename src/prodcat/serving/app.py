"""The HTTP API: a saved model behind FastAPI, with dynamic micro-batching.

- `POST /predict` `{"titles": [...], "top_k": 3}` or `{"title": "..."}` -> each title's
  categories and probabilities, best first (`{"predictions": [{"categories": [...]}]}`).
- `GET /health`: liveness and what the batcher did; `GET /model`: family, categories,
  metrics, training data; `/docs`: the OpenAPI page.

Bad input is a 4xx with a message naming the field, never a 500: invalid JSON or UTF-8,
wrong types, unknown keys, empty or whitespace titles, titles over `MAX_TITLE_CHARS`,
lists over `MAX_TITLES`, bodies over `MAX_BODY_BYTES`. Clients send titles only: the
server opens no path a client names. With an API key set, `/predict` and `/model` need
it in the `X-API-Key` header (401 otherwise).

`create_app(classifier)` builds the app (tests drive it in-process); `serve` runs it under
uvicorn; `app_from_environment` is the factory each uvicorn worker process calls.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from prodcat.serving.batcher import MicroBatcher
from prodcat.serving.runtimes import load_classifier
from prodcat.version import __version__

if TYPE_CHECKING:
    from prodcat.serving.onnx_runtime import OnnxClassifier
    from prodcat.serving.predictor import Classifier

MAX_TITLES = 1000  # titles in one request
MAX_TITLE_CHARS = 1000  # characters in one title (real titles have under 200)
MAX_TOP_K = 20
MAX_BODY_BYTES = 8 << 20  # 1,000 titles of 1,000 \uXXXX-escaped characters fit
API_KEY_HEADER = "X-API-Key"
SETTINGS_ENV = "PRODCAT_SERVE_SETTINGS"  # how `serve` hands its settings to worker processes
API_KEY_ENV = "PRODCAT_API_KEY"

log = logging.getLogger(__name__)


def _check_title(title: str) -> str:
    if not title.strip():
        raise ValueError("a title must not be empty or only whitespace")
    if len(title) > MAX_TITLE_CHARS:
        raise ValueError(f"a title must have at most {MAX_TITLE_CHARS} characters")
    return title


# The schema says what `_check_title` checks, so that clients (and schemathesis) generating
# requests from it make valid ones: Python's `\S` is exactly "not only str.isspace()".
TITLE_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS, "pattern": r"\S"}
Title = Annotated[str, AfterValidator(_check_title), WithJsonSchema(TITLE_SCHEMA)]


def _request_schema(schema: dict[str, Any]) -> None:
    # `title` and `titles` are optional but not nullable, and exactly one of them is given.
    for name in ("title", "titles"):
        field = schema["properties"][name]
        field.update(next(s for s in field.pop("anyOf") if s.get("type") != "null"))
        field.pop("default", None)
    schema["oneOf"] = [{"required": ["title"]}, {"required": ["titles"]}]
    schema["examples"] = [
        {"titles": ["Placa De Sonido - Behringer Umc22", "Taladro Percutor"], "top_k": 3},
        {"title": "Placa De Sonido - Behringer Umc22"},
    ]


class PredictRequest(BaseModel):
    """One title or a list of titles, and how many categories to return for each."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_request_schema)

    title: Title | None = Field(None, description="one title (or give `titles`)")
    titles: list[Title] | None = Field(
        None, min_length=1, max_length=MAX_TITLES, description="titles to classify"
    )
    top_k: int = Field(1, ge=1, le=MAX_TOP_K, description="categories returned per title")

    @field_validator("top_k", mode="before")
    @classmethod
    def _integral_number(cls, value: Any) -> Any:
        # JSON Schema counts 3.0 as an integer; strict pydantic would not.
        return int(value) if isinstance(value, float) and value.is_integer() else value

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("title", "titles"):
                if name in data and data[name] is None:
                    raise ValueError(f"'{name}' must not be null: leave it out")
        return data

    @model_validator(mode="after")
    def _one_of_title_and_titles(self) -> PredictRequest:
        if (self.title is None) == (self.titles is None):
            raise ValueError("give either 'title' or 'titles'")
        return self

    def all_titles(self) -> list[str]:
        return [self.title] if self.title is not None else list(self.titles or [])


class CategoryScore(BaseModel):
    category: str
    probability: float


class Prediction(BaseModel):
    categories: list[CategoryScore] = Field(description="the top_k categories, best first")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="one per title, in the request's order")


def model_info(classifier: Classifier | OnnxClassifier) -> dict[str, Any]:
    """What `/model` says: family, categories, the run's metrics and training data."""
    data = classifier.cfg.data
    metrics: dict[str, Any] = {}
    if classifier.folder is not None and (classifier.folder / "metrics.json").is_file():
        saved = json.loads((classifier.folder / "metrics.json").read_text(encoding="utf-8"))
        # Server paths and the per-epoch history are no business of clients.
        metrics = {k: v for k, v in saved.items() if k not in ("output_dir", "history")}

    def rows(split: str) -> int | None:
        if split == "train":
            return metrics.get("train_rows")
        return (metrics.get(split) or {}).get("rows")

    return {
        "family": classifier.cfg.model.family,
        "runtime": classifier.runtime,
        "classes": len(classifier.labels),
        "categories": classifier.categories,
        "metrics": metrics,
        "training_data": {
            split: {
                "file": Path(path).name if (path := getattr(data, split)) else None,
                "rows": rows(split),
            }
            for split in ("train", "validation", "test")
        },
        "prodcat_version": __version__,
    }


def _validation_error(error: ValidationError) -> RequestValidationError:
    # Without the input: echoing up to MAX_BODY_BYTES back helps no one (and bytes that are
    # not UTF-8 could not be echoed as JSON).
    return RequestValidationError(
        [
            {
                "type": e["type"],
                "loc": ("body", *e["loc"]),
                "msg": e["msg"],
                **({"ctx": {k: str(v) for k, v in e["ctx"].items()}} if "ctx" in e else {}),
            }
            for e in error.errors(include_url=False, include_input=False)
        ]
    )


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, before they are read."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.limit:
                response = JSONResponse(
                    {"detail": f"the request body must be at most {self.limit:,} bytes"}
                    if length.isdigit()
                    else {"detail": "invalid Content-Length header"},
                    status_code=413 if length.isdigit() else 400,
                )
                return await response(scope, receive, send)
            receive = self._counted(receive)
        return await self.app(scope, receive, send)

    def _counted(self, receive):
        # A body sent without Content-Length (chunked) is counted as it arrives.
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, f"the request body must be at most {self.limit:,} bytes")
            return message

        return counted


def create_app(
    classifier: Classifier | OnnxClassifier,
    *,
    api_key: str | None = None,
    max_batch: int = 256,
    max_wait_ms: float = 5.0,
) -> FastAPI:
    """The HTTP app over a loaded classifier; `app.state.batcher` counts its model calls."""
    batcher = MicroBatcher(classifier.top_k, max_batch=max_batch, max_wait_ms=max_wait_ms)
    info = model_info(classifier)
    names = classifier.labels.names
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(
        title="prodcat",
        version=__version__,
        summary=f"Product-title categories from a {info['family']} model "
        f"({info['classes']} categories)",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    # A default, not Annotated[...]: the header scheme is local, string annotations see globals.
    def check_key(given: str | None = Security(key_header)) -> None:  # noqa: B008
        if api_key and not hmac.compare_digest((given or "").encode(), api_key.encode()):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    keyed = [Security(check_key)] if api_key else []

    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=keyed,
        responses={
            400: {"description": "an invalid Content-Length header"},
            401: {"description": f"a missing or wrong {API_KEY_HEADER} header"},
            413: {"description": f"a body over {MAX_BODY_BYTES:,} bytes"},
            422: {"description": "invalid JSON or UTF-8, or a request the schema refuses"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    async def predict(request: Request) -> Response:
        """Categories and probabilities of one title or a list of titles, best first."""
        # Parsed here rather than by FastAPI: invalid UTF-8 or JSON becomes a 422 that says
        # so (FastAPI answers an undecodable body with a bare 400).
        with batcher.arriving():
            try:
                body = PredictRequest.model_validate_json(await request.body())
            except ValidationError as e:
                raise _validation_error(e) from None
            answer = batcher.submit(body.all_titles(), body.top_k)
        indices, probs = await answer
        predictions = [
            {"categories": [{"category": names[i], "probability": p} for i, p in zip(ix, ps)]}
            for ix, ps in zip(indices.tolist(), probs.tolist())
        ]
        return JSONResponse({"predictions": predictions})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, uptime and what the micro-batcher has done."""
        return {
            "status": "ok",
            "uptime_seconds": round(time.time() - started, 1),
            "requests": batcher.requests,
            "model_calls": batcher.model_calls,
            "titles": batcher.titles,
        }

    @app.get("/model", dependencies=keyed)
    async def model() -> dict[str, Any]:
        """The model: family, categories, the run's metrics and training data, versions."""
        return info

    return app


def freeze_loaded_objects() -> None:
    """Exempt what is loaded so far (the model, torch's and the libraries' objects) from
    garbage collection: a full collection traversed all of it, a ~150 ms pause that every
    request in flight waited out (the p99 of 64 concurrent clients), now a few ms."""
    gc.collect()
    gc.freeze()


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process, from the settings `serve` put in the env."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    app = create_app(
        load_classifier(settings["model"], settings["runtime"], settings["onnx"]),
        api_key=os.environ.get(API_KEY_ENV) or None,
        max_batch=settings["max_batch"],
        max_wait_ms=settings["max_wait_ms"],
    )
    freeze_loaded_objects()
    return app


def serve(
    model: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    api_key: str | None = None,
    max_batch: int = 256,
    max_wait_ms: float = 5.0,
    access_log: bool = True,
    runtime: str = "torch",
    onnx_path: Path | None = None,
) -> None:
    """Run the API under uvicorn until interrupted; each of `workers` processes loads the
    model (under `runtime`: torch, or onnx for the exported graph). The model is loaded here
    first, so a bad folder fails before anything listens."""
    import uvicorn

    classifier = load_classifier(model, runtime, onnx_path)
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without an API key: anyone who can reach it may use it", host)
    common = {"host": host, "port": port, "access_log": access_log, "log_level": "info"}
    if workers == 1:
        app = create_app(classifier, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms)
        freeze_loaded_objects()
        uvicorn.run(app, **common)
        return
    os.environ[SETTINGS_ENV] = json.dumps(
        {
            "model": str(classifier.folder.resolve()),  # an MLflow URI is downloaded once
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "runtime": runtime,
            "onnx": str(Path(onnx_path).resolve()) if onnx_path is not None else None,
        }
    )
    if api_key:
        os.environ[API_KEY_ENV] = api_key
    uvicorn.run("prodcat.serving.app:app_from_environment", factory=True, workers=workers, **common)
