"""What a request must pass before it reaches the model: the bearer token, the body's size,
its parsing into a ``serve.schemas`` model, the server's limits and the model's types,
modalities and image sizes. Every refusal is an ``HTTPException`` whose detail names the
field: ``[{"loc": "<field>", "msg": "<what is wrong>"}]`` (413: too large, 422: invalid).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel

from serve.schemas import ForecastIn, PredictIn, ServerConfig

if TYPE_CHECKING:
    from mmtpp.events import EventSequence
    from mmtpp.predict import Predictor

Body = TypeVar("Body", bound=BaseModel)


def problem(status: int, loc: str, message: str) -> HTTPException:
    """A refusal naming the field ``loc`` and what is wrong with it."""
    return HTTPException(status, detail=[{"loc": loc, "msg": message}])


def error_list(err: ValueError) -> list[dict[str, Any]]:
    """A validation error as ``[{"loc", "msg"}]``: one entry per invalid field of a pydantic
    error (its location dotted), else one for the whole body."""
    if hasattr(err, "errors"):
        return [
            {"loc": ".".join(str(x) for x in e.get("loc", ())), "msg": e.get("msg", "")}
            for e in err.errors()
        ]
    return [{"loc": "body", "msg": str(err)}]


def image_format(data: bytes) -> str | None:
    """PNG or JPEG from the file signature; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return None


def parse(model: type[Body], body: bytes) -> Body:
    """The request body as ``model``; a 422 listing every invalid field otherwise."""
    try:
        return model.model_validate_json(body)
    except ValueError as err:
        raise HTTPException(422, detail=error_list(err)) from err


def at_most(field: str, value: int, limit: int) -> None:
    """A 422 on ``field`` when ``value`` exceeds ``limit``."""
    if value > limit:
        raise problem(422, field, f"{value} > limit {limit}")


class RequestChecks:
    """The checks of one replica: its config's token and limits, its model's event types,
    modalities and image sizes."""

    def __init__(self, config: ServerConfig, predictor: Predictor):
        self.config = config
        self.predictor = predictor
        self.token = config.token or os.environ.get(config.token_env) or None

    def check_token(self, authorization: str | None) -> None:
        """A 401 unless ``authorization`` is ``Bearer <token>`` (when a token is set)."""
        wanted = f"Bearer {self.token}".encode()
        if self.token is not None and not hmac.compare_digest(
            (authorization or "").encode(), wanted
        ):
            raise HTTPException(
                401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    async def read_body(self, request: Request) -> bytes:
        """The body, refused (413) as soon as it exceeds ``limits.max_body_bytes``."""
        limits = self.config.limits
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise problem(413, "body", f"{declared} bytes > limit {limits.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # never more than the limit in memory
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise problem(413, "body", f"more than the limit {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def decode_image(self, ref: str, where: str) -> bytes:
        """The checked, encoded bytes of a request image: base64 PNG/JPEG, or a path under
        ``image_root`` (read here, so that a bad image fails its own request only)."""
        from mmtpp.images import ImageError, ImageSpec, open_image, read_bytes

        limits = self.config.limits
        if ref.startswith(("http://", "https://", "file:")):
            raise problem(422, where, "URLs are refused: send base64 image bytes")
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
            is_image = data is not None and image_format(data) is not None
            if not is_image and self.config.image_root is not None and len(ref) < 512:
                root = self.config.image_root  # a path under the root (symlinks included)
                data = read_bytes(ref, root, spec, trusted_root=root)
            elif data is None:
                raise problem(
                    422,
                    where,
                    f"not valid base64 ({b64_error}); image paths "
                    "need image_root in the server config",
                )
            if len(data) > limits.max_image_bytes:
                raise problem(413, where, f"{len(data)} bytes > limit {limits.max_image_bytes}")
            fmt = image_format(data)
            if fmt not in limits.image_formats:
                raise problem(
                    422, where, f"image format {fmt or 'unknown'} not in {limits.image_formats}"
                )
            open_image(data, spec)  # decodes: a truncated file fails here, not in a batch
        except ImageError as err:
            raise problem(413 if err.reason == "oversize" else 422, where, str(err)) from err
        return data

    def history(self, req: PredictIn | ForecastIn) -> EventSequence:
        """The request's events as an ``EventSequence``, every field within the limits and
        every image decoded (a bad one fails its own request before it joins a batch)."""
        from mmtpp.events import EventSequence

        limits = self.config.limits
        if len(req.events) > limits.max_events:
            raise problem(413, "events", f"{len(req.events)} events > limit {limits.max_events}")
        num_types = self.predictor.num_types
        images = []
        for i, ev in enumerate(req.events):
            if ev.type >= num_types:
                raise problem(422, f"events[{i}].type", f"{ev.type} not in 0..{num_types - 1}")
            if ev.text is not None and len(ev.text) > limits.max_text_chars:
                message = f"{len(ev.text)} characters > limit {limits.max_text_chars}"
                raise problem(422, f"events[{i}].text", message)
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
        """Refuse a prediction whose decoding or quantile levels exceed the limits."""
        limits = self.config.limits
        at_most("decode.samples", req.decode.samples, limits.max_samples)
        at_most("decode.max_text_tokens", req.decode.max_text_tokens, limits.max_text_tokens)
        if req.quantiles is not None:
            at_most("quantiles", len(req.quantiles), limits.max_quantiles)

    def check_forecast(self, req: ForecastIn) -> int:
        """Refuse a forecast beyond the limits; returns the steps to run (``until`` alone:
        the step limit)."""
        limits = self.config.limits
        steps = req.steps if req.steps is not None else limits.max_forecast_steps
        at_most("steps", steps, limits.max_forecast_steps)
        at_most("samples", req.samples, limits.max_forecast_samples)
        at_most("max_text_tokens", req.max_text_tokens, limits.max_text_tokens)
        at_most("summary_levels", len(req.summary_levels), limits.max_quantiles)
        if "text" in req.tasks and "text" not in self.predictor.modalities:
            raise problem(422, "tasks", "the model was trained without text")
        if steps * req.samples > limits.max_forecast_events:
            message = (
                f"samples x steps = {req.samples} x {steps} > limit {limits.max_forecast_events}"
            )
            raise problem(422, "samples", message)
        horizon = limits.max_forecast_horizon
        if req.until is not None and horizon is not None:
            span = req.until - req.events[-1].time
            if span > horizon:
                message = f"until − last event time = {span:g} > limit {horizon:g}"
                raise problem(422, "until", message)
        return steps
