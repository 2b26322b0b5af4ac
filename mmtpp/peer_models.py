"""EasyTPP's neural TPPs as peers: their settings, construction and training (docs/peers.md).

The peers are EasyTPP's own model classes (``easy_tpp.model``: THP, NHP, IntensityFree, SAHP,
RMTPP, S2P2), built through its model factory and trained with its log-likelihood loss on
mmtpp's training split, in EasyTPP's rescaled time unit (every time divided by the mean
training gap; ``Peer.time_scale``). They read times and types only. ``mmtpp.peers`` scores a
fitted peer on mmtpp's targets. Install with ``pip install -e '.[peers]'`` (``easy-tpp``).

Long sequences: a window holds at most ``max_len`` events; training cuts a longer sequence
into windows of ``max_len`` events that overlap by one (a window's first event is history only).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# EasyTPP model classes run here. AttNHP is left out: its intensity at a set of sample times
# re-encodes the whole window once per sample (hundreds of encoder passes per window here).
PEER_NAMES = ("THP", "NHP", "IntensityFree", "SAHP", "RMTPP", "S2P2")

Events = tuple[np.ndarray, np.ndarray]  # (absolute times float64 [n], types int [n])


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class PeerSettings:
    """Hyper-parameters shared by every peer (the model is named by ``fit_peer``'s ``name``).

    Models follow EasyTPP's example configs (hidden 32, two layers and two heads for the
    attention models, 20 integration points per interval in the loss, Adam). Changed: Adam at
    3e-3 on batches of 4 windows (EasyTPP's examples use 1e-3 on 256 sequences: on a dataset
    of a few hundred sequences that is a handful of steps per epoch; on the embedded default
    NHP reached a val NLL of 1.43 after 10 epochs at 1e-3 / 16 and 0.45 after 6 at 3e-3 / 4),
    the loss integrates with the trapezoid rule (``use_mc_samples=False``, EasyTPP's option),
    and thinning averages 100 draws instead of 1, so ``pred_gap`` is a mean, not one draw.
    """

    epochs: int = _help("maximum training epochs (passes over the training windows)", 20)
    patience: int = _help("stop after this many epochs without a better val NLL (0 = never)", 3)
    hidden_size: int = _help("hidden size of every model (EasyTPP's hidden_size)", 32)
    lr: float = _help("Adam learning rate", 3e-3)
    batch_size: int = _help("sequence windows per training and scoring batch", 4)
    seed: int = _help("seed of initialisation, data order and thinning draws", 0)
    max_len: int = _help("events per window (longer sequences: see the module docstring)", 1024)
    integral_samples: int = _help(
        "points per interval in EasyTPP's training-loss integral (trapezoid rule)", 20
    )
    mixture_components: int = _help("log-normal components of IntensityFree", 8)
    thinning_samples: int = _help("draws averaged into the predicted gap", 100)
    thinning_draws: int = _help("exponential proposals per thinning draw (EasyTPP's num_exp)", 500)
    dtime_max: float = _help(
        "thinning's answer when every proposal is rejected, in mean training gaps", 5.0
    )
    grid_points: int = _help("offsets of the grid for P(type), mean and median gap", 512)
    grid_horizon: float = _help("end of that grid, in mean training gaps", 1000.0)

    def __post_init__(self) -> None:
        for name, minimum in (
            ("epochs", 1),
            ("patience", 0),
            ("hidden_size", 2),
            ("batch_size", 1),
            ("max_len", 2),
            ("integral_samples", 2),
            ("mixture_components", 1),
            ("thinning_samples", 1),
            ("thinning_draws", 1),
            ("grid_points", 16),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"peers.{name} must be an integer >= {minimum}, got {value!r}")
        if self.hidden_size % 2:
            raise ValueError(
                f"peers.hidden_size must be even (THP and SAHP split it over 2 heads), "
                f"got {self.hidden_size}"
            )
        for name in ("lr", "dtime_max", "grid_horizon"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"peers.{name} must be a finite number > 0, got {value!r}")


@dataclass
class Peer:
    """A fitted EasyTPP model and what scoring needs to convert its outputs.

    ``time_scale`` is the mean training gap (the model's time unit, in the dataset's);
    ``val_nll`` is the best validation NLL per event in the dataset's unit as EasyTPP's loss
    computes it (its integral on ``integral_samples`` points; None without validation data);
    ``history`` holds (train, val) NLL per epoch.
    """

    name: str
    model: Any
    num_types: int
    time_scale: float
    settings: PeerSettings
    epochs_run: int
    best_epoch: int
    val_nll: float | None
    train_seconds: float
    history: list[tuple[float, float | None]]


def _easytpp() -> Any:
    try:
        import easy_tpp.model  # noqa: F401  (registers the model classes)
        from easy_tpp.config_factory.data_config import DataSpecConfig
        from easy_tpp.config_factory.model_config import ModelConfig
        from easy_tpp.model.basemodel import BaseModel
        from easy_tpp.preprocess.event_tokenizer import EventTokenizer
    except ImportError as err:
        raise ImportError(
            "the peers need EasyTPP: pip install -e '.[peers]' (easy-tpp==0.3.0)"
        ) from err
    return DataSpecConfig, ModelConfig, BaseModel, EventTokenizer


def check_peer_name(name: str) -> None:
    if name not in PEER_NAMES:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEER_NAMES)}")


def check_events(events: Sequence[Events], num_types: int, what: str) -> None:
    for j, (times, types) in enumerate(events):
        t, k = np.asarray(times), np.asarray(types)
        if t.ndim != 1 or t.shape != k.shape:
            raise ValueError(f"{what}[{j}]: times and types must be 1-D of one length")
        if not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
            raise ValueError(f"{what}[{j}]: times must be finite and non-decreasing")
        if k.size and (k.min() < 0 or k.max() >= num_types):
            raise ValueError(f"{what}[{j}]: types must lie in [0, {num_types}), got {k.min()}..")


def _windows(n: int, max_len: int) -> list[tuple[int, int]]:
    """Training windows ``[start, stop)`` of at most ``max_len`` events, overlapping by one."""
    if n < 2:
        return []
    return [(s, min(s + max_len, n)) for s in range(0, n - 1, max_len - 1)]


def window_features(
    times: np.ndarray, types: np.ndarray, start: int, stop: int, scale: float
) -> dict:
    """One window as EasyTPP's per-sequence dict, in the model's unit, starting at time 0."""
    t = (np.asarray(times[start:stop], np.float64) - times[start]) / scale
    return {
        "time_seqs": t.tolist(),
        "time_delta_seqs": np.diff(t, prepend=t[0]).tolist(),
        "type_seqs": np.asarray(types[start:stop], np.int64).tolist(),
    }


def pad_batch(tokenizer: Any, features: list[dict]) -> dict[str, Any]:
    """EasyTPP's padding (right, pad id = num_types) and causal attention masks."""
    return dict(tokenizer.pad(features, return_tensors="pt").items())


def _model_specs(name: str, settings: PeerSettings) -> dict[str, Any]:
    if name == "IntensityFree":
        return {"num_mix_components": settings.mixture_components}
    if name == "S2P2":
        return {"P": settings.hidden_size}
    return {}


def _build(name: str, num_types: int, settings: PeerSettings, log_gaps: np.ndarray) -> Any:
    _, model_config_cls, base_model, _ = _easytpp()
    config = model_config_cls(
        hidden_size=settings.hidden_size,
        time_emb_size=16,
        num_layers=2,
        num_heads=2,
        loss_integral_num_sample_per_step=settings.integral_samples,
        use_mc_samples=False,
        dropout_rate=0.0,
        use_ln=False,
        thinning={
            "num_sample": settings.thinning_samples,
            "num_exp": settings.thinning_draws,
            "over_sample_rate": 5,
            "num_samples_boundary": 5,
            "dtime_max": settings.dtime_max,
        },
        training=True,
        num_event_types=num_types,
        num_event_types_pad=num_types + 1,
        event_pad_index=num_types,
        model_id=name,
        gpu=-1,
        model_specs=_model_specs(name, settings),
    )
    # IntensityFree standardises log-gaps with the training statistics (as EasyTPP's runner).
    config.set("mean_log_inter_time", float(log_gaps.mean()))
    config.set("std_log_inter_time", float(log_gaps.std()) or 1.0)
    return base_model.generate_model_from_config(config)


def event_tokenizer(num_types: int) -> Any:
    data_spec_cls, _, _, tokenizer_cls = _easytpp()
    return tokenizer_cls(
        data_spec_cls(
            num_event_types=num_types,
            pad_token_id=num_types,
            padding_side="right",
            truncation_side="right",
        )
    )


def _mean_nll(model: Any, tokenizer: Any, features: list[dict], batch_size: int) -> float:
    """EasyTPP's loss per event over ``features`` (model unit), without gradients."""
    import torch

    total, events = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            loss, n = model.loglike_loss(**pad_batch(tokenizer, features[i : i + batch_size]))
            total, events = total + float(loss), events + int(n)
    return total / max(events, 1)


def _time_scale(train: Sequence[Events]) -> tuple[float, np.ndarray]:
    """EasyTPP's rescale_time: the mean training gap (the model's time unit), and the
    log-gaps in that unit [gaps] (as EasyTPP's get_dt_stats, clipped at 1e-5)."""
    gaps = np.concatenate([np.diff(np.asarray(t, np.float64)) for t, _ in train] or [[]])
    if gaps.size == 0 or not gaps.mean() > 0:
        raise ValueError("train: needs at least one positive gap between events of a sequence")
    scale = float(gaps.mean())
    return scale, np.log(np.clip(gaps / scale, 1e-5, None))


def _features(events: Sequence[Events], max_len: int, scale: float) -> list[dict]:
    """Every sequence's training windows as EasyTPP's per-sequence dicts (model unit)."""
    return [
        window_features(t, k, a, b, scale) for t, k in events for a, b in _windows(len(t), max_len)
    ]


def _train_epoch(
    model: Any,
    tokenizer: Any,
    optimizer: Any,
    features: list[dict],
    order: np.random.Generator,
    batch_size: int,
) -> float:
    """One pass over ``features`` in an order drawn from ``order``, one Adam step per batch;
    the training NLL per event (model unit)."""
    model.train()
    total, events = 0.0, 0
    idx = order.permutation(len(features))
    for i in range(0, len(idx), batch_size):
        chunk = [features[j] for j in idx[i : i + batch_size]]
        loss, n = model.loglike_loss(**pad_batch(tokenizer, chunk))
        optimizer.zero_grad()
        (loss / n).backward()  # EasyTPP's ModelWrapper step: mean NLL per event
        optimizer.step()
        total, events = total + loss.item(), events + int(n)
    model.eval()
    return total / max(events, 1)


def fit_peer(
    name: str,
    train: Sequence[Events],
    val: Sequence[Events],
    num_types: int,
    settings: PeerSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> Peer:
    """Train EasyTPP's ``name`` on ``train`` (absolute times in the dataset's unit, types in
    [0, num_types)) with its loss and Adam; keep the epoch with the best joint NLL on ``val``
    (the last epoch when ``val`` holds no event to predict). Seeded: one seed gives the same
    model on a CPU. ``log``: called with one line per epoch (NLLs per event, seconds)."""
    import torch

    settings = settings or PeerSettings()
    check_peer_name(name)
    check_events(train, num_types, "train")
    check_events(val, num_types, "val")
    scale, log_gaps = _time_scale(train)
    torch.set_flush_denormal(True)  # denormals slow CPU kernels many times over
    torch.manual_seed(settings.seed)
    model = _build(name, num_types, settings, log_gaps)
    tokenizer = event_tokenizer(num_types)
    train_features = _features(train, settings.max_len, scale)
    val_features = _features(val, settings.max_len, scale)
    if not train_features:
        raise ValueError("train: no sequence has two events")
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    order = np.random.default_rng(settings.seed)
    shift = math.log(scale)  # model unit → dataset unit, per event
    best: tuple[float, int, dict] = (math.inf, -1, copy.deepcopy(model.state_dict()))
    history: list[tuple[float, float | None]] = []
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        train_nll = _train_epoch(
            model, tokenizer, optimizer, train_features, order, settings.batch_size
        )
        val_nll = (
            _mean_nll(model, tokenizer, val_features, settings.batch_size) + shift
            if val_features
            else None
        )
        history.append((train_nll + shift, val_nll))
        if log is not None:
            shown = f"{val_nll:.4f}" if val_nll is not None else "—"
            log(
                f"  {name} epoch {epoch + 1}/{settings.epochs}: train NLL "
                f"{history[-1][0]:.4f}, val NLL {shown} ({time.perf_counter() - start:.0f} s)"
            )
        score = val_nll if val_nll is not None else -epoch  # no val: keep the last epoch
        if score < best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        elif settings.patience and epoch - best[1] >= settings.patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    return Peer(
        name=name,
        model=model,
        num_types=num_types,
        time_scale=scale,
        settings=settings,
        epochs_run=len(history),
        best_epoch=best[1],
        val_nll=best[0] if val_features else None,
        train_seconds=time.perf_counter() - start,
        history=history,
    )


def intensity_free_bin_log_prob(locs, log_scales, weight_logits, standardise, bins) -> np.ndarray:
    """[m] log P(lo ≤ τ < hi) under IntensityFree's log-normal mixture (log τ standardised by
    ``standardise`` = (mean, std), then a Gaussian mixture [m, C]), for ``bins`` [m, 2] in the
    model's unit: in float64 and in log space per component (EasyTPP's own survival function
    clamps each component's CDF to [1e-7, 1 − 1e-7], which makes a bin in the tails look
    empty), as a difference of CDFs below the median and of survivals above it."""
    import torch

    mean, std = standardise
    edges = torch.as_tensor(np.asarray(bins, np.float64))
    y = (torch.log(edges) - mean) / std  # [m, 2]; log 0 = −inf: the lower edge of a tie's bin
    z = (y[..., None] - locs.double()[:, None]) / log_scales.double().exp()[:, None]  # [m, 2, C]
    log_w = torch.log_softmax(weight_logits.double(), dim=-1)[:, None]
    log_cdf = torch.logsumexp(log_w + torch.special.log_ndtr(z), dim=-1).numpy()
    log_sf = torch.logsumexp(log_w + torch.special.log_ndtr(-z), dim=-1).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        below = log_cdf[:, 1] + np.log1p(-np.exp(log_cdf[:, 0] - log_cdf[:, 1]))
        above = log_sf[:, 0] + np.log1p(-np.exp(log_sf[:, 1] - log_sf[:, 0]))
    out = np.where(log_cdf[:, 1] < math.log(0.5), below, above)
    return np.where(np.isnan(out), -np.inf, out)  # both edges beyond float64: no mass
