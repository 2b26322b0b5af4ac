"""Ray Serve application: HTTP endpoints over a trained MM-TPP adapter (SPEC §9).

    serve run serve/config.yaml                 # or: serve deploy serve/config.yaml
    curl -s 127.0.0.1:8000/healthz

POST /v1/predict takes a history of events and the tasks to run, and returns the next event.
Concurrent requests are batched dynamically (``@serve.batch``) into one ``mmtpp.predict``
call; batch sizes and seconds in model calls are counted at GET /v1/metrics. Every
endpoint but /healthz requires ``Authorization: Bearer <token>`` when a token is configured
(``token`` or the environment variable named by ``token_env``). This module only wires HTTP
to ``mmtpp.predict``.
"""

import base64
import binascii
import hmac
import os
import time
from collections import Counter
from typing import Any, Literal

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ray import serve

from mmtpp.decoding import DecodeOptions

TASK = Literal["time", "type", "text"]
FLOAT32_MAX = 3.4028234663852886e38


class Limits(BaseModel):
    """Bounds on what a request may hold."""

    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = 8 * 1024 * 1024
    max_events: int = 2048
    max_text_chars: int = 2000
    max_image_bytes: int = 512 * 1024
    max_image_pixels: int = 1024 * 1024  # decoded size: checked from the header first
    image_formats: list[str] = ["PNG", "JPEG"]
    # prompt rows per model call (a history sampled k times is k rows): bounds the memory
    # of one call whatever the batch and the requested samples
    max_rows_per_call: int = 64
    max_samples: int = 32  # decode.samples
    max_text_tokens: int = 256  # decode.max_text_tokens


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_dir: str
    image_root: str | None = None  # image paths are refused unless set (then: under it)
    token: str | None = None
    token_env: str = "MMTPP_SERVE_TOKEN"
    dtype: Literal["float32", "bfloat16"] | None = None  # None: the dtype it was trained in
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.02
    # Each replica's Ray resources: without num_gpus Ray hides the node's GPUs from the
    # replica and the model runs on its CPU.
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    limits: Limits = Limits()


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: float = Field(description="absolute time of the event", allow_inf_nan=False)
    type: int = Field(ge=0, description="event type id (see GET /v1/model)")
    text: str | None = None
    image: str | None = Field(None, description="base64 PNG/JPEG, or a path under image_root")


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1)
    tasks: list[TASK] = Field(default_factory=lambda: ["time", "type", "text"], min_length=1)
    decode: DecodeOptions = DecodeOptions()

    @field_validator("tasks")
    @classmethod
    def distinct(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError("tasks must be distinct")
        return tasks

    @model_validator(mode="after")
    def sorted_times(self) -> "PredictIn":
        for i in range(1, len(self.events)):
            if self.events[i].time < self.events[i - 1].time:
                raise ValueError(
                    f"events[{i}].time {self.events[i].time} is before events[{i - 1}].time "
                    f"{self.events[i - 1].time}: events must be sorted by time"
                )
            gap = self.events[i].time - self.events[i - 1].time
            if gap > FLOAT32_MAX:  # the model reads gaps as float32
                raise ValueError(f"events[{i}]: gap {gap:g} does not fit in float32")
        return self


class PredictOut(BaseModel):
    time: float | None = Field(description="predicted gap to the next event")
    next_event_time: float | None = Field(description="last event time + predicted gap")
    type: int | None
    type_name: str | None
    text: str | None
    invalid: dict[str, str] = Field(description="task -> reason the generation was invalid")
    invalid_samples: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="sampled time (mean/median): task -> reason -> invalid samples left out",
    )
    history_events: int = Field(description="events of the history in the prompt")
    compressed_events: int = Field(description="of which replaced by <|similar_event|>")
    prompt_tokens: int


app = FastAPI(
    title="mmtpp",
    description="Next-event prediction (time, type, text) for multimodal event sequences.",
    version="1",
)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` written in place (the route reads its body
    itself, under a size limit, so FastAPI cannot list the schema on /docs by itself)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            here = {k: walk(v) for k, v in node.items() if k != "$ref"}  # e.g. a default
            if "$ref" in node:
                return {**walk(defs[node["$ref"].rsplit("/", 1)[-1]]), **here}
            return here
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": _inline_refs(PredictIn.model_json_schema())}},
}


def _problem(status: int, loc: str, message: str) -> HTTPException:
    return HTTPException(status, detail=[{"loc": loc, "msg": message}])


def _errors(err: ValueError) -> list[dict[str, Any]]:
    if hasattr(err, "errors"):
        return [
            {"loc": ".".join(str(x) for x in e.get("loc", ())), "msg": e.get("msg", "")}
            for e in err.errors()
        ]
    return [{"loc": "body", "msg": str(err)}]


def _image_format(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return None


@serve.deployment(ray_actor_options={"num_cpus": 1})
@serve.ingress(app)
class MMTPPServer:
    def __init__(self, config: dict[str, Any]):
        from mmtpp.predict import Predictor

        self.config = ServerConfig(**config)
        self.token = self.config.token or os.environ.get(self.config.token_env) or None
        self.predictor = Predictor(
            self.config.model_dir, image_root=self.config.image_root, dtype=self.config.dtype
        )
        self.batch_sizes: Counter[int] = Counter()
        self.requests = 0
        self.errors = 0
        self.model_seconds = 0.0  # wall time in model calls
        self.predict_batch.set_max_batch_size(self.config.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    # --- auth and limits ------------------------------------------------------------------

    def check_token(self, authorization: str | None) -> None:
        wanted = f"Bearer {self.token}".encode()
        if self.token is not None and not hmac.compare_digest(
            (authorization or "").encode(), wanted
        ):
            raise HTTPException(
                401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def decode_image(self, ref: str, where: str) -> bytes:
        """The checked, encoded bytes of a request image: base64 PNG/JPEG, or a path under
        ``image_root`` (read here, so that a bad image fails its own request only)."""
        from mmtpp.images import ImageError, ImageSpec, open_image, read_bytes

        limits = self.config.limits
        if ref.startswith(("http://", "https://", "file:")):
            raise _problem(422, where, "URLs are refused: send base64 image bytes")
        try:
            data = base64.b64decode(ref, validate=True)
        except (binascii.Error, ValueError) as err:
            data, b64_error = None, err
        spec = ImageSpec(
            self.predictor.spec.min_pixels,
            self.predictor.spec.max_pixels,
            max_bytes=limits.max_image_bytes,
            max_source_pixels=limits.max_image_pixels,
        )
        try:
            is_image = data is not None and _image_format(data) is not None
            if not is_image and self.config.image_root is not None and len(ref) < 512:
                root = self.config.image_root  # a path under the root (symlinks included)
                data = read_bytes(ref, root, spec, trusted_root=root)
            elif data is None:
                raise _problem(
                    422,
                    where,
                    f"not valid base64 ({b64_error}); image paths "
                    "need image_root in the server config",
                )
            if len(data) > limits.max_image_bytes:
                raise _problem(413, where, f"{len(data)} bytes > limit {limits.max_image_bytes}")
            fmt = _image_format(data)
            if fmt not in limits.image_formats:
                raise _problem(
                    422, where, f"image format {fmt or 'unknown'} not in {limits.image_formats}"
                )
            open_image(data, spec)  # decodes: a truncated file fails here, not in a batch
        except ImageError as err:
            raise _problem(413 if err.reason == "oversize" else 422, where, str(err)) from err
        return data

    # --- endpoints ------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info(self, authorization: str | None = Header(None)) -> dict[str, Any]:
        self.check_token(authorization)
        card = self.predictor.card
        return {
            "base_model": card.model.base,
            "base_path": card.base_path,
            "adapter": self.config.model_dir,
            "stage": card.stage,
            "dtype": self.predictor.dtype,
            "compression": card.compression.model_dump(),
            "delta": card.compression.delta,
            "stage2_direction": card.stage2_direction,
            "modalities": card.modalities,
            "budget": card.budget,
            "type_names": card.type_names,
            "limits": self.config.limits.model_dump(),
            "max_batch_size": self.config.max_batch_size,
        }

    @app.get("/v1/metrics")
    async def metrics(self, authorization: str | None = Header(None)) -> dict[str, Any]:
        self.check_token(authorization)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "batches": sum(self.batch_sizes.values()),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "model_seconds": round(self.model_seconds, 3),
        }

    @app.post("/v1/predict", response_model=PredictOut, openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(
        self, request: Request, authorization: str | None = Header(None)
    ) -> PredictOut:
        self.check_token(authorization)
        from mmtpp.events import EventSequence

        limits = self.config.limits
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise _problem(413, "body", f"{declared} bytes > limit {limits.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # never more than the limit in memory
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise _problem(413, "body", f"more than the limit {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            req = PredictIn.model_validate_json(body)
        except ValueError as err:
            raise HTTPException(422, detail=_errors(err)) from err
        if len(req.events) > limits.max_events:
            raise _problem(413, "events", f"{len(req.events)} events > limit {limits.max_events}")
        if req.decode.samples > limits.max_samples:
            message = f"{req.decode.samples} > limit {limits.max_samples}"
            raise _problem(422, "decode.samples", message)
        if req.decode.max_text_tokens > limits.max_text_tokens:
            message = f"{req.decode.max_text_tokens} > limit {limits.max_text_tokens}"
            raise _problem(422, "decode.max_text_tokens", message)
        num_types = self.predictor.num_types
        images = []
        for i, ev in enumerate(req.events):
            if ev.type >= num_types:
                raise _problem(422, f"events[{i}].type", f"{ev.type} not in 0..{num_types - 1}")
            if ev.text is not None and len(ev.text) > limits.max_text_chars:
                message = f"{len(ev.text)} characters > limit {limits.max_text_chars}"
                raise _problem(422, f"events[{i}].text", message)
            images.append(
                None if ev.image is None else self.decode_image(ev.image, f"events[{i}].image")
            )
        seq = EventSequence(
            "request",
            [e.time for e in req.events],
            [e.type for e in req.events],
            [e.text for e in req.events],
            images,
        )
        self.requests += 1
        pred = await self.predict_batch((seq, tuple(req.tasks), req.decode))
        if isinstance(pred, ValueError):  # e.g. an image the decoder refuses
            self.errors += 1
            raise _problem(422, "events", str(pred))
        names = self.predictor.card.type_names
        return PredictOut(
            time=pred.time,
            next_event_time=None if pred.time is None else req.events[-1].time + pred.time,
            type=pred.type,
            type_name=None if pred.type is None else names[pred.type],
            text=pred.text,
            invalid=pred.invalid,
            invalid_samples=pred.invalid_samples,
            history_events=pred.history_events,
            compressed_events=pred.compressed_events,
            prompt_tokens=pred.prompt_tokens,
        )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def predict_batch(self, items: list[tuple]) -> list[Any]:
        """One model call per group of requests sharing tasks and decoding options."""
        self.batch_sizes[len(items)] += 1
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, tasks, options) in enumerate(items):
            groups.setdefault((tasks, options.model_dump_json()), []).append(i)
        for (tasks, _), idx in groups.items():
            options = items[idx[0]][2]
            histories = [items[i][0] for i in idx]
            sampled = "time" in tasks and options.sampled_time
            per_call = max(
                1, self.config.limits.max_rows_per_call // (options.samples if sampled else 1)
            )
            start = time.perf_counter()
            # On the event loop, not in a thread: measured faster (bench_serve), as
            # requests that arrive meanwhile wait and then fill the next batch at once.
            preds = self.predict_isolated(histories, list(tasks), options, per_call)
            self.model_seconds += time.perf_counter() - start
            for i, p in zip(idx, preds, strict=True):
                out[i] = p
        return out

    def predict_isolated(self, histories: list, tasks: list[str], options, per_call: int):
        """Predictions in calls of ``per_call`` histories; a call that fails (an input only
        the model path refuses, such as a last event too long for the budget) is redone one
        history at a time, so that only the offending request gets the error."""
        preds: list[Any] = []
        for i in range(0, len(histories), per_call):
            chunk = histories[i : i + per_call]
            try:
                preds.extend(self.predictor.predict(chunk, tasks, options, len(chunk)))
            except ValueError as err:
                if len(chunk) == 1:
                    preds.append(err)
                    continue
                for h in chunk:
                    try:
                        preds.extend(self.predictor.predict([h], tasks, options, 1))
                    except ValueError as one:
                        preds.append(one)
        return preds


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run serve.app:build_app model_dir=...`` and config files."""
    config = ServerConfig(**args)
    # Serve admits 5 requests per replica by default: too few to fill a batch.
    deployment = MMTPPServer.options(
        max_ongoing_requests=max(8, 2 * config.max_batch_size),
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
    )
    return deployment.bind(config.model_dump())


def wait_until_healthy(url: str, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not become healthy in {timeout_s} s")
