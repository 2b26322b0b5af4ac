"""How a next event is decoded from the model: one options type for evaluation, the
command line, offline prediction and Serve (design §7).

The time can be read greedily (close to the most probable gap), as the model's conditional
mean (``expected``: exact over the gap's first two bytes, deterministic; what minimises RMSE)
or as the mean or median of ``samples`` sampled byte sequences (the median minimises MAE).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmtpp.templates import RESPONSE_LENGTH

TimeMode = Literal["greedy", "expected", "mean", "median"]
TIME_MODES: tuple[str, ...] = ("greedy", "expected", "mean", "median")


class DecodeOptions(BaseModel):
    """Decoding settings of one prediction call."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    time_mode: TimeMode = Field(
        "expected",
        description="next gap: 'greedy', 'expected' (the model's conditional mean from its "
        "byte probabilities), or 'mean'/'median' of sampled byte tokens",
    )
    samples: int = Field(8, ge=1, description="samples for time_mode mean/median")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (mean/median)")
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
        return self.time_mode in ("mean", "median")

    def decode_only(self) -> DecodeOptions:
        """These options as a plain ``DecodeOptions`` (a subclass's other fields dropped)."""
        return DecodeOptions(**{k: getattr(self, k) for k in DecodeOptions.model_fields})
