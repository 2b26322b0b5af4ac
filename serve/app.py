"""Ray Serve application: HTTP endpoints over a trained MM-TPP adapter (design §9;
docs/serving.md).

    serve run serve/config.yaml                 # or: serve deploy serve/config.yaml
    curl -s 127.0.0.1:8000/healthz

POST /v1/predict takes a history of events and the tasks to run, and returns the next event
(and, when asked, the next gap's quantiles); POST /v1/forecast returns sampled continuations
of several events. Concurrent requests are batched dynamically (``@serve.batch``) into one
``mmtpp.predict`` call per endpoint; batch sizes and seconds in model calls are counted at
GET /v1/metrics. Every endpoint but /healthz requires ``Authorization: Bearer <token>`` when a
token is configured (``token`` or the environment variable named by ``token_env``). The
bodies are ``serve.schemas``; this module only wires HTTP to ``mmtpp.predict``.
"""

import base64
import binascii
import hmac
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve

from serve.schemas import (
    ForecastEventOut,
    ForecastIn,
    ForecastOut,
    PredictIn,
    PredictOut,
    QuantileOut,
    ServerConfig,
    StepSummary,
    request_body,
)

PREDICT_BODY = request_body(PredictIn)
FORECAST_BODY = request_body(ForecastIn)

app = FastAPI(
    title="mmtpp",
    description="Next-event prediction (time, type, text), the next gap's quantiles and "
    "sampled multi-step forecasts for multimodal event sequences.",
    version="1",
)


# The helpers the deployment calls are defined above it: a replica found names defined below
# the class missing (NameError), as the class is serialized where it is defined.


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


def _parse(model, body: bytes):
    """The request body as ``model``; a 422 listing every invalid field otherwise."""
    try:
        return model.model_validate_json(body)
    except ValueError as err:
        raise HTTPException(422, detail=_errors(err)) from err


def _at_most(field: str, value: int, limit: int) -> None:
    if value > limit:
        raise _problem(422, field, f"{value} > limit {limit}")


def _isolated(items: list, per_call: int, run: Callable[[list], list]) -> list:
    """``run`` on calls of ``per_call`` requests; a call that fails (an input only the
    model path refuses, such as a last event too long for the budget) is redone one request
    at a time, so that only the offending request gets the error."""
    out: list[Any] = []
    for i in range(0, len(items), per_call):
        chunk = items[i : i + per_call]
        try:
            out.extend(run(chunk))
        except ValueError as err:
            if len(chunk) == 1:
                out.append(err)
                continue
            for h in chunk:
                try:
                    out.extend(run([h]))
                except ValueError as one:
                    out.append(one)
    return out


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
        self.forecast_batch_sizes: Counter[int] = Counter()
        self.requests = 0
        self.forecasts = 0
        self.errors = 0
        self.model_seconds = 0.0  # wall time in model calls
        for batched in (self.predict_batch, self.forecast_batch):
            batched.set_max_batch_size(self.config.max_batch_size)
            batched.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

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
            "forecasts": self.forecasts,
            "errors": self.errors,
            "batches": sum(self.batch_sizes.values()),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "forecast_batch_sizes": {
                str(k): v for k, v in sorted(self.forecast_batch_sizes.items())
            },
            "model_seconds": round(self.model_seconds, 3),
        }

    # --- reading requests -----------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        """The body, refused (413) as soon as it exceeds ``limits.max_body_bytes``."""
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
        return b"".join(chunks)

    def history(self, req: PredictIn | ForecastIn):
        """The request's events as an ``EventSequence``, every field within the limits and
        every image decoded (a bad one fails its own request before it joins a batch)."""
        from mmtpp.events import EventSequence

        limits = self.config.limits
        if len(req.events) > limits.max_events:
            raise _problem(413, "events", f"{len(req.events)} events > limit {limits.max_events}")
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
        return EventSequence(
            "request",
            [e.time for e in req.events],
            [e.type for e in req.events],
            [e.text for e in req.events],
            images,
        )

    def check_predict(self, req: PredictIn) -> None:
        limits = self.config.limits
        _at_most("decode.samples", req.decode.samples, limits.max_samples)
        _at_most("decode.max_text_tokens", req.decode.max_text_tokens, limits.max_text_tokens)
        if req.quantiles is not None:
            _at_most("quantiles", len(req.quantiles), limits.max_quantiles)

    def check_forecast(self, req: ForecastIn) -> int:
        """Refuse a forecast beyond the limits; returns the steps to run (``until`` alone:
        the step limit)."""
        limits = self.config.limits
        steps = req.steps if req.steps is not None else limits.max_forecast_steps
        _at_most("steps", steps, limits.max_forecast_steps)
        _at_most("samples", req.samples, limits.max_forecast_samples)
        _at_most("max_text_tokens", req.max_text_tokens, limits.max_text_tokens)
        _at_most("summary_levels", len(req.summary_levels), limits.max_quantiles)
        if "text" in req.tasks and "text" not in self.predictor.modalities:
            raise _problem(422, "tasks", "the model was trained without text")
        if steps * req.samples > limits.max_forecast_events:
            message = (
                f"samples x steps = {req.samples} x {steps} > limit {limits.max_forecast_events}"
            )
            raise _problem(422, "samples", message)
        horizon = limits.max_forecast_horizon
        if req.until is not None and horizon is not None:
            span = req.until - req.events[-1].time
            if span > horizon:
                message = f"until − last event time = {span:g} > limit {horizon:g}"
                raise _problem(422, "until", message)
        return steps

    # --- endpoints that run the model -------------------------------------------------------

    @app.post("/v1/predict", response_model=PredictOut, openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(
        self, request: Request, authorization: str | None = Header(None)
    ) -> PredictOut:
        self.check_token(authorization)
        req = _parse(PredictIn, await self.read_body(request))
        self.check_predict(req)
        seq = self.history(req)
        self.requests += 1
        levels = tuple(req.quantiles) if req.quantiles is not None else None
        pred = await self.predict_batch(
            (seq, tuple(req.tasks), req.decode, levels, req.quantile_resolution)
        )
        if isinstance(pred, ValueError):  # e.g. a last event too long for the budget
            self.errors += 1
            raise _problem(422, "events", str(pred))
        pred, gaps = pred
        names = self.predictor.card.type_names
        last = req.events[-1].time
        quantiles = None
        if levels is not None:
            quantiles = [
                QuantileOut(level=a, gap=g, time=None if g is None else last + g)
                for a, g in zip(levels, gaps, strict=True)
            ]
        return PredictOut(
            time=pred.time,
            next_event_time=None if pred.time is None else last + pred.time,
            type=pred.type,
            type_name=None if pred.type is None else names[pred.type],
            text=pred.text,
            invalid=pred.invalid,
            invalid_samples=pred.invalid_samples,
            history_events=pred.history_events,
            compressed_events=pred.compressed_events,
            prompt_tokens=pred.prompt_tokens,
            gap_quantiles=quantiles,
        )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def predict_batch(self, items: list[tuple]) -> list[Any]:
        """One model call per group of requests sharing tasks, decoding options and quantile
        levels: (prediction, quantiles or None) per request, or the ValueError that only
        its history raised."""
        self.batch_sizes[len(items)] += 1
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, tasks, options, levels, resolution) in enumerate(items):
            groups.setdefault((tasks, options.model_dump_json(), levels, resolution), []).append(i)
        for idx in groups.values():
            _, tasks, options, _, _ = items[idx[0]]
            sampled = "time" in tasks and options.sampled_time
            rows = self.config.limits.max_rows_per_call
            per_call = max(1, rows // (options.samples if sampled else 1))
            start = time.perf_counter()
            # On the event loop, not in a thread: measured faster (bench_serve), as
            # requests that arrive meanwhile wait and then fill the next batch at once.
            results = _isolated([items[i] for i in idx], per_call, self.predict_chunk)
            self.model_seconds += time.perf_counter() - start
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out

    def predict_chunk(self, chunk: list[tuple]) -> list[tuple]:
        """Predictions (and quantiles) of requests sharing their settings, in one call."""
        histories = [item[0] for item in chunk]
        _, tasks, options, levels, resolution = chunk[0]
        preds = self.predictor.predict(histories, list(tasks), options, len(histories))
        if levels is None:
            return [(p, None) for p in preds]
        rows = self.config.limits.max_rows_per_call
        exact = resolution == "exact"
        q = self.predictor.gap_quantiles(histories, levels, exact, options, max_rows=rows)
        gaps = [[None if np.isnan(v) else float(v) for v in row] for row in q]
        return list(zip(preds, gaps, strict=True))

    @app.post(
        "/v1/forecast", response_model=ForecastOut, openapi_extra={"requestBody": FORECAST_BODY}
    )
    async def forecast(
        self, request: Request, authorization: str | None = Header(None)
    ) -> ForecastOut:
        self.check_token(authorization)
        req = _parse(ForecastIn, await self.read_body(request))
        steps = self.check_forecast(req)
        seq = self.history(req)
        self.forecasts += 1
        key = (steps, req.steps is None, req.samples, tuple(req.tasks), req.max_text_tokens)
        fc = await self.forecast_batch((seq, key, req.until, req.seed))
        if isinstance(fc, ValueError):
            self.errors += 1
            raise _problem(422, "events", str(fc))
        return self.forecast_out(req, *fc)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def forecast_batch(self, items: list[tuple]) -> list[Any]:
        """One ``Predictor.forecast`` per group of requests sharing steps, samples, tasks and
        text length (each with its own ``until`` and seed): (forecast, row) per request, or
        the ValueError that only its history raised."""
        self.forecast_batch_sizes[len(items)] += 1
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, key, until, _) in enumerate(items):
            groups.setdefault((*key, until is None), []).append(i)
        rows = self.config.limits.max_rows_per_call
        for key, idx in groups.items():
            samples = key[2]
            start = time.perf_counter()
            chunks = max(1, rows // samples)  # histories whose continuations fill a call
            results = _isolated([items[i] for i in idx], chunks, self.forecast_chunk)
            self.model_seconds += time.perf_counter() - start
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out

    def forecast_chunk(self, chunk: list[tuple]) -> list[tuple]:
        """One forecast of requests sharing their settings: (forecast, its row) each."""
        steps, open_ended, samples, tasks, text_tokens = chunk[0][1]
        has_until = chunk[0][2] is not None
        fc = self.predictor.forecast(
            [item[0] for item in chunk],
            steps=None if open_ended else steps,
            until=[item[2] for item in chunk] if has_until else None,
            samples=samples,
            tasks=tasks,
            seed=[item[3] for item in chunk],
            max_rows=self.config.limits.max_rows_per_call,
            max_steps=steps,
            max_text_tokens=text_tokens,
        )
        return [(fc, h) for h in range(len(chunk))]

    def forecast_out(self, req: ForecastIn, fc, h: int) -> ForecastOut:
        """The response for history h of forecast ``fc``: continuations and per-step
        summaries (quantiles of the k-th time, type shares over the samples having one)."""
        names = self.predictor.card.type_names
        c = fc.continuations
        start = float(c.start[h])
        continuations = []
        for s, n in enumerate(c.lengths[h]):
            times = c.times[h, s, :n]
            gaps = np.diff(np.concatenate([[start], times]))
            texts = fc.texts[h][s] if fc.texts is not None else [None] * n
            continuations.append(
                [
                    ForecastEventOut(
                        time=float(t),
                        gap=float(g),
                        type=int(k),
                        type_name=names[int(k)],
                        text=text,
                    )
                    for t, g, k, text in zip(times, gaps, c.types[h, s, :n], texts, strict=True)
                ]
            )
        steps = []
        for k in range(c.steps):
            has = ~np.isnan(c.times[h, :, k])
            if not has.any():
                break
            q = np.quantile(c.times[h, has, k], req.summary_levels)
            freq = np.bincount(c.types[h, has, k], minlength=len(names)) / has.sum()
            steps.append(
                StepSummary(
                    step=k + 1,
                    samples=int(has.sum()),
                    time_quantiles=[
                        {"level": a, "time": float(v)}
                        for a, v in zip(req.summary_levels, q, strict=True)
                    ],
                    type_frequencies=freq.tolist(),
                )
            )
        return ForecastOut(
            start=start,
            continuations=continuations,
            steps=steps,
            invalid_draws=fc.invalid_of(h),
            truncated=int(fc.truncated[h]),
        )


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
