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
bodies are ``serve.schemas``, the checks a request passes ``serve.request_checks`` and how a
batch runs ``serve.batching``; this module only wires HTTP to ``mmtpp.predict``.
"""

import time
from collections import Counter
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve

from serve.batching import run_grouped
from serve.request_checks import RequestChecks, parse, problem
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


def _predict_group(item: tuple) -> tuple:
    """Predictions share a model call when they share tasks, decoding options and quantile
    levels and resolution."""
    _, tasks, options, levels, resolution = item
    return (tasks, options.model_dump_json(), levels, resolution)


def _forecast_group(item: tuple) -> tuple:
    """Forecasts share a model call when they share steps, samples, tasks and text length,
    and all or none have an ``until``."""
    _, key, until, _ = item
    return (*key, until is None)


@serve.deployment(ray_actor_options={"num_cpus": 1})
@serve.ingress(app)
class MMTPPServer:
    def __init__(self, config: dict[str, Any]):
        from mmtpp.predict import Predictor

        self.config = ServerConfig(**config)
        self.predictor = Predictor(
            self.config.model_dir, image_root=self.config.image_root, dtype=self.config.dtype
        )
        self.checks = RequestChecks(self.config, self.predictor)
        self.batch_sizes: Counter[int] = Counter()
        self.forecast_batch_sizes: Counter[int] = Counter()
        self.requests = 0
        self.forecasts = 0
        self.errors = 0
        self.model_seconds = 0.0  # wall time in model calls
        for batched in (self.predict_batch, self.forecast_batch):
            batched.set_max_batch_size(self.config.max_batch_size)
            batched.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    # --- endpoints ------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info(self, authorization: str | None = Header(None)) -> dict[str, Any]:
        self.checks.check_token(authorization)
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
        self.checks.check_token(authorization)
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

    # --- endpoints that run the model -------------------------------------------------------

    @app.post("/v1/predict", response_model=PredictOut, openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(
        self, request: Request, authorization: str | None = Header(None)
    ) -> PredictOut:
        self.checks.check_token(authorization)
        req = parse(PredictIn, await self.checks.read_body(request))
        self.checks.check_predict(req)
        seq = self.checks.history(req)
        self.requests += 1
        levels = tuple(req.quantiles) if req.quantiles is not None else None
        pred = await self.predict_batch(
            (seq, tuple(req.tasks), req.decode, levels, req.quantile_resolution)
        )
        if isinstance(pred, ValueError):  # e.g. a last event too long for the budget
            self.errors += 1
            raise problem(422, "events", str(pred))
        return self.predict_out(req, levels, *pred)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def predict_batch(self, items: list[tuple]) -> list[Any]:
        """One model call per group of requests sharing tasks, decoding options and quantile
        levels: (prediction, quantiles or None) per request, or the ValueError that only
        its history raised."""
        self.batch_sizes[len(items)] += 1
        rows = self.config.limits.max_rows_per_call

        def per_call(item: tuple) -> int:
            _, tasks, options, _, _ = item
            sampled = "time" in tasks and options.sampled_time
            return max(1, rows // (options.samples if sampled else 1))

        # On the event loop, not in a thread: measured faster (bench_serve), as
        # requests that arrive meanwhile wait and then fill the next batch at once.
        out, seconds = run_grouped(items, _predict_group, per_call, self.predict_chunk)
        self.model_seconds += seconds
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

    def predict_out(
        self, req: PredictIn, levels: tuple | None, pred, gaps: list | None
    ) -> PredictOut:
        """The response to ``req``: the prediction, and the next gap's quantiles at
        ``levels`` (absolute times too, from the last event's)."""
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

    @app.post(
        "/v1/forecast", response_model=ForecastOut, openapi_extra={"requestBody": FORECAST_BODY}
    )
    async def forecast(
        self, request: Request, authorization: str | None = Header(None)
    ) -> ForecastOut:
        self.checks.check_token(authorization)
        req = parse(ForecastIn, await self.checks.read_body(request))
        steps = self.checks.check_forecast(req)
        seq = self.checks.history(req)
        self.forecasts += 1
        key = (steps, req.steps is None, req.samples, tuple(req.tasks), req.max_text_tokens)
        fc = await self.forecast_batch((seq, key, req.until, req.seed))
        if isinstance(fc, ValueError):
            self.errors += 1
            raise problem(422, "events", str(fc))
        return self.forecast_out(req, *fc)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def forecast_batch(self, items: list[tuple]) -> list[Any]:
        """One ``Predictor.forecast`` per group of requests sharing steps, samples, tasks and
        text length (each with its own ``until`` and seed): (forecast, row) per request, or
        the ValueError that only its history raised."""
        self.forecast_batch_sizes[len(items)] += 1
        rows = self.config.limits.max_rows_per_call

        def per_call(item: tuple) -> int:  # histories whose continuations fill a call
            samples = item[1][2]
            return max(1, rows // samples)

        out, seconds = run_grouped(items, _forecast_group, per_call, self.forecast_chunk)
        self.model_seconds += seconds
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
