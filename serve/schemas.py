"""What the Serve endpoints accept and return (request and response bodies, limits, server
config), as pydantic models: FastAPI validates with them and publishes them on /docs."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    # prompt rows per model call (a history sampled k times is k rows; a forecast's
    # continuations are one row each; exact quantiles one per level): bounds the memory of
    # one call whatever the batch and the request
    max_rows_per_call: int = 64
    max_samples: int = 32  # decode.samples
    max_text_tokens: int = 256  # decode.max_text_tokens, forecast max_text_tokens
    max_quantiles: int = 32  # quantile levels per request
    max_forecast_steps: int = 64  # events per continuation (and the cap with `until` alone)
    max_forecast_samples: int = 32  # continuations per forecast
    max_forecast_events: int = 512  # samples x steps: the events one forecast may draw
    # until − the last event's time, in the data's time unit (None: bounded by steps only)
    max_forecast_horizon: float | None = None


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


def _levels(levels: list[float] | None) -> list[float] | None:
    if levels is not None:
        bad = [x for x in levels if not 0 < x < 1]
        if bad:
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {bad}")
    return levels


class HistoryIn(BaseModel):
    """A history of events, sorted by time (what every model endpoint reads)."""

    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, description="the history, sorted by time")

    @model_validator(mode="after")
    def sorted_times(self) -> "HistoryIn":
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


class PredictIn(HistoryIn):
    tasks: list[TASK] = Field(default_factory=lambda: ["time", "type", "text"], min_length=1)
    decode: DecodeOptions = DecodeOptions()
    quantiles: list[float] | None = Field(
        None,
        min_length=1,
        description="levels (each in (0, 1)) of the next gap's quantiles to return, e.g. "
        "[0.05, 0.25, 0.5, 0.75, 0.95] (the 50% and 90% central intervals)",
    )
    quantile_resolution: Literal["cell", "exact"] = Field(
        "cell",
        description="'cell': from the gap's first two byte tokens, linear inside a cell at "
        "most 1/128 of the value wide; 'exact': at float32 resolution (four more model steps)",
    )

    @field_validator("tasks")
    @classmethod
    def distinct(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError("tasks must be distinct")
        return tasks

    @field_validator("quantiles")
    @classmethod
    def levels_in_range(cls, levels: list[float] | None) -> list[float] | None:
        return _levels(levels)


class QuantileOut(BaseModel):
    level: float
    gap: float | None = Field(description="the gap's quantile (None: no valid distribution)")
    time: float | None = Field(description="last event time + gap")


class PredictOut(BaseModel):
    time: float | None = Field(description="predicted gap to the next event")
    next_event_time: float | None = Field(description="last event time + predicted gap")
    type: int | None
    type_name: str | None
    text: str | None
    invalid: dict[str, str] = Field(description="task -> reason the generation was invalid")
    invalid_samples: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="sampled time (sample_mean/sample_median): task -> reason -> invalid "
        "samples left out",
    )
    history_events: int = Field(description="events of the history in the prompt")
    compressed_events: int = Field(description="of which replaced by <|similar_event|>")
    prompt_tokens: int
    gap_quantiles: list[QuantileOut] | None = Field(
        None, description="the next gap's quantiles at the requested levels, in level order"
    )


class ForecastIn(HistoryIn):
    steps: int | None = Field(
        None, ge=1, description="events per continuation (default: until decides, capped)"
    )
    until: float | None = Field(
        None, allow_inf_nan=False, description="absolute time: no event after it"
    )
    samples: int = Field(8, ge=1, description="sampled continuations")
    tasks: list[TASK] = Field(
        default_factory=lambda: ["time", "type"],
        description="time and type (required), and text to generate each event's text",
    )
    seed: int = Field(0, ge=0, lt=2**63, description="the same seed gives the same forecast")
    max_text_tokens: int = Field(48, ge=1, description="longest generated text (with 'text')")
    summary_levels: list[float] = Field(
        default_factory=lambda: [0.05, 0.5, 0.95],
        min_length=1,
        description="levels (each in (0, 1)) of the k-th event time's quantiles over samples",
    )

    @field_validator("tasks")
    @classmethod
    def time_and_type(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError("tasks must be distinct")
        if not {"time", "type"} <= set(tasks):
            raise ValueError(f"tasks must include time and type, got {tasks}")
        return tasks

    @field_validator("summary_levels")
    @classmethod
    def levels_in_range(cls, levels: list[float]) -> list[float]:
        return _levels(levels)

    @model_validator(mode="after")
    def bounded(self) -> "ForecastIn":
        if self.steps is None and self.until is None:
            raise ValueError("give steps, until, or both")
        last = self.events[-1].time
        if self.until is not None and self.until < last:
            raise ValueError(f"until {self.until} is before the last event's time {last}")
        return self


class ForecastEventOut(BaseModel):
    time: float = Field(description="absolute time")
    gap: float = Field(description="time since the event before")
    type: int
    type_name: str
    text: str | None = None


class StepSummary(BaseModel):
    step: int = Field(description="k: the k-th event after the history")
    samples: int = Field(description="continuations that have a k-th event")
    time_quantiles: list[dict[str, float]] = Field(
        description="[{level, time}]: quantiles of the k-th event's time over those samples"
    )
    type_frequencies: list[float] = Field(description="share of each type among them")


class ForecastOut(BaseModel):
    start: float = Field(description="time of the history's last event")
    continuations: list[list[ForecastEventOut]] = Field(description="one list per sample")
    steps: list[StepSummary]
    invalid_draws: dict[str, int] = Field(
        description="reason -> tokens drawn where they cannot stand (not a byte, a negative "
        "or inf/NaN gap, not a type), each redrawn from the valid tokens"
    )
    truncated: int = Field(description="continuations stopped by the step limit before until")


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` written in place (a route that reads its body
    itself, under a size limit, publishes the schema with ``openapi_extra``)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            here = {k: walk(v) for k, v in node.items() if k != "$ref"}  # e.g. a default
            if "$ref" in node:
                return {**walk(defs[node["$ref"].rsplit("/", 1)[-1]]), **here}
            return here
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route whose body is ``model``."""
    return {
        "required": True,
        "content": {"application/json": {"schema": inline_refs(model.model_json_schema())}},
    }
