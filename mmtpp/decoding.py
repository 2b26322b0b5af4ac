"""How a next event is decoded from the model: one options type for evaluation, the
command line, offline prediction and Serve (design §7).

The time can be read greedily (close to the most probable gap), or from the model's
distribution of the gap (``mmtpp.distribution``: exact over the gap's first two bytes,
deterministic): its mean (``expected``, what minimises RMSE) or its median (``median``, what
minimises MAE; within 1/128 of the value); or as the mean or median of ``samples`` sampled
byte sequences (``sample_mean``, ``sample_median``: Monte Carlo estimates of the same two
figures, noisier, kept to check the distribution against what the model generates).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmtpp.templates import RESPONSE_LENGTH

TimeMode = Literal["greedy", "expected", "median", "sample_mean", "sample_median"]
TIME_MODES: tuple[str, ...] = ("greedy", "expected", "median", "sample_mean", "sample_median")
# time modes read from the gap's distribution (no sampling)
DISTRIBUTION_MODES: tuple[str, ...] = ("expected", "median")
SAMPLED_MODES: tuple[str, ...] = ("sample_mean", "sample_median")
# quantile levels of the next gap reported by default (the 50% and 90% central intervals)
QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


class DecodeOptions(BaseModel):
    """Decoding settings of one prediction call."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    time_mode: TimeMode = Field(
        "expected",
        description="next gap: 'greedy'; 'expected' or 'median' (the mean or median of the "
        "model's distribution of the gap, from its byte probabilities, deterministic); or "
        "'sample_mean'/'sample_median' of sampled byte tokens",
    )
    samples: int = Field(8, ge=1, description="samples for time_mode sample_mean/sample_median")
    temperature: float = Field(
        1.0, gt=0, description="sampling temperature (sample_mean/sample_median)"
    )
    max_text_tokens: int = Field(48, ge=1, description="longest generated text")
    compress: bool = Field(
        True,
        description="compress the history of prompts (false: the same targets, histories "
        "uncompressed: Δ = 0 at inference only)",
    )

    def response_length(self, task: str) -> int:
        """Most tokens a response to ``task`` takes (text: wrappers and <|endoftext|> too)."""
        return RESPONSE_LENGTH.get(task, self.max_text_tokens + 3)

    @property
    def sampled_time(self) -> bool:
        """Whether the time is read from ``samples`` sampled byte sequences."""
        return self.time_mode in SAMPLED_MODES

    def decode_only(self) -> DecodeOptions:
        """These options as a plain ``DecodeOptions`` (a subclass's other fields dropped)."""
        return DecodeOptions(**{k: getattr(self, k) for k in DecodeOptions.model_fields})
