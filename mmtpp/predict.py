"""Next-event prediction from a trained adapter: the one code path evaluation, offline
prediction and Serve share (design §7).

A history (an ``EventSequence``) is rendered exactly as in training — the model card's
modalities, compression rule and scan direction (or uncompressed, ``compress=False``) within
its budget, then a task token — and the model generates the response, which
``parsing.Parser`` turns into a value or an invalid reason that is counted. The time can be
decoded greedily, as the mean (``expected``) or median (``median``) of the model's
distribution of the gap, or as the mean or median of ``samples`` sampled byte sequences
(``sample_mean``, ``sample_median``); the conditional mean minimises RMSE, the median MAE.

Beyond one point: ``gap_quantiles`` / ``gap_intervals`` give the next gap's quantiles and
central intervals (two-byte cells, or float32 resolution with ``exact``), and ``forecast``
samples whole continuations of several events (``mmtpp.forecast``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from transformers import GenerationConfig

from mmtpp.compression import CompressionRule
from mmtpp.decoding import QUANTILE_LEVELS, DecodeOptions
from mmtpp.events import EventSequence
from mmtpp.eventtokens import EventTokens
from mmtpp.forecast import DEFAULT_MAX_ROWS, Forecast, ForecastSampler, check_request
from mmtpp.generation import Generator, Prompt
from mmtpp.images import ImageSpec, image_token_counter, read_bytes
from mmtpp.model import image_processor, load_trained
from mmtpp.parsing import Parsed, Parser
from mmtpp.templates import RESPONSE_LENGTH, SHORT_RESPONSE_ROOM, Renderer
from mmtpp.tokens import TASKS, TokenIds

INFERENCE_DTYPES = ("float32", "bfloat16")
DEFAULT_MAX_STEPS = 100  # events per continuation when a forecast gives only ``until``


@dataclass
class Prediction:
    time: float | None = None
    type: int | None = None
    text: str | None = None
    invalid: dict[str, str] = field(default_factory=dict)  # task -> reason
    # sampled time (sample_mean/sample_median): task -> reason -> samples that were invalid
    # and left out of the mean/median (the prediction is invalid only when every sample is)
    invalid_samples: dict[str, dict[str, int]] = field(default_factory=dict)
    history_events: int = 0
    compressed_events: int = 0
    prompt_tokens: int = 0


class Predictor(Generator):
    """A trained model directory (``<output_dir>/stage2/model``) ready to predict.

    ``dtype`` (``"float32"``, ``"bfloat16"``) overrides the dtype the model was trained in:
    on a CPU with bf16 instructions, batched prefill runs ~1.5x faster in bfloat16 while one
    history at a time does not (measured in benchmarks/bench_serve.py's setting).
    """

    def __init__(
        self,
        model_dir: str | Path,
        image_root: str | Path | None = None,
        dtype: str | None = None,
        device: str | None = None,
    ):
        torch.set_flush_denormal(True)
        peft_model, self.tokenizer, self.card = load_trained(model_dir)
        model = peft_model.merge_and_unload().eval()  # same outputs, faster inference
        # Decoding settings are mmtpp's, never the checkpoint's: Qwen2.5-VL-Instruct ships
        # sampling settings and repetition_penalty=1.05, which would penalise every byte and
        # structure token already in the history. ``generate`` is given each setting.
        eos = self.tokenizer.eos_token_id
        model.generation_config = GenerationConfig(
            bos_token_id=eos, eos_token_id=eos, pad_token_id=eos
        )
        # default: the GPU when this process has one (a Serve replica or task given one)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.to(device)
        if dtype is not None:
            if dtype not in INFERENCE_DTYPES:
                raise ValueError(f"dtype must be one of {INFERENCE_DTYPES}, got {dtype!r}")
            model.to(getattr(torch, dtype))
        self.dtype = str(model.dtype).removeprefix("torch.")
        card = self.card
        self.num_types = card.num_types
        ids = TokenIds.from_tokenizer(self.tokenizer, self.num_types)
        spec = ImageSpec(card.image_min_pixels, card.image_max_pixels)
        parser = Parser(self.tokenizer, ids)
        super().__init__(model, ids, parser, image_processor(spec), spec, device)
        self.renderer = Renderer(self.tokenizer, ids)
        # image paths lead under image_root (absolute paths and symlinks included)
        self.count_image_tokens = image_token_counter(image_root, self.spec, image_root)
        self.image_root = image_root
        # prompts are built exactly as in training: the card's rule, direction, budget and
        # modalities
        self.rule = card.rule
        self.direction = card.stage2_direction
        self.budget = card.budget
        self.modalities = card.modalities

    def prompt_rule(self, compress: bool) -> CompressionRule:
        """The model's compression rule, or (``compress`` False) the same rule at Δ = 0."""
        return self.rule if compress else CompressionRule(self.rule.mode, 0.0, self.rule.keep_type)

    def seen(self, histories: Sequence[EventSequence]) -> list[EventSequence]:
        """The histories as the model was trained to see them (its modalities only)."""
        return [h.with_modalities(self.modalities) for h in histories]

    # --- prompts ------------------------------------------------------------------------

    def prompts(
        self,
        histories: Sequence[EventSequence],
        task: str,
        options: DecodeOptions,
        ets: Sequence[EventTokens] | None = None,
    ) -> list[Prompt]:
        """Prompts that ask for the event after each history (``ets``: their tokens, if
        already computed from ``seen(histories)``)."""
        histories = self.seen(histories)
        if ets is None:
            ets = self.renderer.event_tokens(histories, self.count_image_tokens)
        reserve = SHORT_RESPONSE_ROOM if task in RESPONSE_LENGTH else options.response_length(task)
        room = self.budget - reserve
        rule = self.prompt_rule(options.compress)
        return [
            self.prompt_for(seq, et, len(et), task, rule, room)
            for seq, et in zip(histories, ets, strict=True)
        ]

    def prompt_for(
        self,
        seq: EventSequence,
        et: EventTokens,
        target: int,
        task: str,
        rule: CompressionRule,
        room: int,
        max_events: int | None = None,
    ) -> Prompt:
        """The prompt for event ``target`` of ``seq`` (``et`` its tokens) from at most
        ``max_events`` of its history, compressed under ``rule``, in ``room`` tokens."""
        start, mask, ids = self.renderer.prompt(
            et, target, task, rule, room, max_events, self.direction
        )
        kept = np.arange(start, target)[~mask]
        images = [
            read_bytes(seq.image[i], self.image_root, self.spec, self.image_root)
            for i in kept
            if et.image_tokens[i] > 0
        ]
        return Prompt(ids.tolist(), images, target - start, int(mask.sum()))

    def predict_prompts(
        self,
        prompts: Sequence[Prompt],
        tasks: Sequence[str],
        options: DecodeOptions,
        prompts_by_task: dict[str, Sequence[Prompt]] | None = None,
    ) -> list[Prediction]:
        """Predictions for prepared prompts (``prompts_by_task`` when they differ per task).

        Greedy tasks whose prompts share the history of every row are answered from one
        encoding of that history (``generate_shared``); the others each from their own.
        """
        by_task = {task: (prompts_by_task or {}).get(task, prompts) for task in tasks}
        preds = [
            Prediction(
                history_events=p.history_events,
                compressed_events=p.compressed_events,
                prompt_tokens=len(p.input_ids),
            )
            for p in prompts
        ]
        groups: list[list[str]] = []  # greedy tasks with the same histories
        for task in tasks:
            if task == "time" and options.time_mode != "greedy":
                continue
            group = next((g for g in groups if _same_history(by_task[g[0]], by_task[task])), None)
            if group is None:
                groups.append([task])
            else:
                group.append(task)
        responses: dict[str, list[list[Parsed]]] = {}
        for group in groups:
            if len(group) > 1:
                responses.update(self.generate_shared({t: by_task[t] for t in group}, options))
        for task in tasks:
            if task not in responses:
                responses[task] = self.generate(by_task[task], task, options)
            for pred, samples in zip(preds, responses[task], strict=True):
                value, reason = _aggregate(task, samples, options)
                if reason is not None:
                    pred.invalid[task] = reason
                if len(samples) > 1:
                    dropped = Counter(s.reason for s in samples if not s.valid)
                    if dropped:
                        pred.invalid_samples[task] = dict(dropped)
                setattr(pred, task, value)
        return preds

    def predict(
        self,
        histories: Sequence[EventSequence],
        tasks: Sequence[str] = TASKS,
        options: DecodeOptions | None = None,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """The next event after each history, for the requested tasks."""
        options = options or DecodeOptions()
        out: list[Prediction] = []
        for i in range(0, len(histories), batch_size):
            chunk = self.seen(histories[i : i + batch_size])
            ets = self.renderer.event_tokens(chunk, self.count_image_tokens)
            self.renderer.tokenize_shown(ets, self.prompt_rule(options.compress), [self.direction])
            by_task = {task: self.prompts(chunk, task, options, ets) for task in tasks}
            out.extend(self.predict_prompts(by_task[tasks[0]], tasks, options, by_task))
        return out

    # --- predictive distribution of the next gap ----------------------------------------

    def gap_quantiles(
        self,
        histories: Sequence[EventSequence],
        levels: ArrayLike = QUANTILE_LEVELS,
        exact: bool = False,
        options: DecodeOptions | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> np.ndarray:
        """Quantiles [B, L] of the gap to the next event after each history, at ``levels``
        [L] (each in [0, 1]); NaN for a history whose distribution has no valid cell.

        Default: from the two-byte distribution (``distribution.ByteGapDistribution``: the
        gap's cell, at most 1/128 of its value wide, is exact; the position inside it
        interpolated). ``exact``: the float32 quantile (``Generator.exact_quantiles``, four
        more one-token steps of B·L rows, at most ``max_rows`` per call), on the same first
        bytes as the two-byte distribution keeps.
        """
        options = options or DecodeOptions()
        prompts = self.prompts(histories, "time", options)
        dist = self.gap_distribution(prompts)
        if not exact:
            return dist.quantiles(levels)
        support = dist.first_byte_support()
        q = self.exact_quantiles(prompts, levels, support, max_rows).quantiles
        return np.where(dist.valid[:, None], q, np.nan)

    def gap_intervals(
        self,
        histories: Sequence[EventSequence],
        coverages: Sequence[float] = (0.5, 0.9),
        exact: bool = False,
        options: DecodeOptions | None = None,
    ) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """Central intervals of the next gap: coverage c → (lower [B], upper [B]), the
        quantiles at (1 ∓ c)/2 (``gap_quantiles``)."""
        for c in coverages:
            if not 0 < c < 1:
                raise ValueError(f"interval coverage must be in (0, 1), got {c}")
        levels = sorted({x for c in coverages for x in ((1 - c) / 2, (1 + c) / 2)})
        q = self.gap_quantiles(histories, levels, exact, options)
        column = {level: j for j, level in enumerate(levels)}
        return {c: (q[:, column[(1 - c) / 2]], q[:, column[(1 + c) / 2]]) for c in coverages}

    # --- multi-step forecasts -----------------------------------------------------------

    def forecast(
        self,
        histories: Sequence[EventSequence],
        steps: int | None = None,
        until: float | ArrayLike | None = None,
        samples: int = 8,
        tasks: Sequence[str] = ("time", "type"),
        seed: int | Sequence[int] = 0,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_steps: int = DEFAULT_MAX_STEPS,
        reuse_cache: bool = True,
        max_text_tokens: int = 48,
    ) -> Forecast:
        """``samples`` sampled continuations after each history (``mmtpp.forecast``): up to
        ``steps`` events each, or until the absolute time ``until`` (scalar or one per
        history; with ``until`` alone, at most ``max_steps`` events and the step columns no
        continuation reached dropped). ``tasks``: time and type, and ``"text"`` to generate
        each event's text. ``seed``: one, or one per history (continuation s of history h
        uses (seed_h, s)). At most ``max_rows`` continuations per model call;
        ``reuse_cache=False`` re-encodes every prompt at every step."""
        ends, text = check_request(histories, steps, until, samples, tasks, self.num_types)
        if text and "text" not in self.modalities:
            raise ValueError(f"forecast: the model was trained without text ({self.modalities})")
        seeds = np.asarray(seed, dtype=np.int64).reshape(-1)
        if seeds.size == 1:
            seeds = np.full(len(histories), seeds[0])
        if seeds.size != len(histories) or (seeds < 0).any():
            raise ValueError(
                f"forecast: seed must be one int >= 0 or one per history ({len(histories)}), "
                f"got {seeds.size} values"
            )
        if steps is None and max_steps < 1:
            raise ValueError(f"forecast: max_steps must be >= 1, got {max_steps}")
        sampler = ForecastSampler(self, max_rows, reuse_cache, max_text_tokens)
        return sampler.sample(
            histories, steps or max_steps, ends, samples, text, seeds, trim=steps is None
        )


def _same_history(a: Sequence[Prompt], b: Sequence[Prompt]) -> bool:
    """Whether, row by row, two tasks' prompts differ at most in their final (task) token."""
    return all(
        x.input_ids[:-1] == y.input_ids[:-1] and x.images == y.images
        for x, y in zip(a, b, strict=True)
    )


def _aggregate(task: str, samples: list[Parsed], options: DecodeOptions):
    valid = [s.value for s in samples if s.valid]
    if not valid:
        reason = Counter(s.reason for s in samples).most_common(1)[0][0]
        return None, reason
    if task == "time" and len(samples) > 1:
        values = np.asarray(valid, dtype=float)
        mean = options.time_mode == "sample_mean"
        return float(values.mean() if mean else np.median(values)), None
    return valid[0], None
