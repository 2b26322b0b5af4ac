"""What the images in a target's prompt could tell the model, on synthetic data (design §10).

The 'regime' process shows the hidden regime in each image's background, the 'profile'
process shows the favourite next type after the event's type. Whether the prompt of a test
target holds such evidence depends on the window the budget and the compression rule leave
(a compressed event shows no image). This counts, per target, whether the prompt shows:

- regime: an image of the regime in force at the target (the background of some shown event
  equals the true regime: what an image-reading model could have seen);
- profile: an image of an event of the same type as the target's previous event (its
  background hints the favourite next type the target's type is drawn from), and whether
  one of those shows the true favourite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmtpp.card import ModelCard
from mmtpp.events import DatasetInfo, EventSequence
from mmtpp.eventtokens import EventTokens
from mmtpp.templates import SHORT_RESPONSE_ROOM, Renderer


def _windows(
    card: ModelCard, renderer: Renderer, et: EventTokens, targets: Sequence[int]
) -> list[np.ndarray]:
    """The events each target's prompt shows in full (with their images)."""
    room = card.budget - SHORT_RESPONSE_ROOM - 1
    shown = []
    for t in targets:
        start, mask = renderer.history_window(et, t, card.rule, room, None, card.stage2_direction)
        shown.append(np.arange(start, t)[~mask])
    return shown


def image_evidence(
    info: DatasetInfo,
    card: ModelCard,
    renderer: Renderer,
    counter,
    sequences: dict[str, EventSequence],
    targets: Sequence[tuple[str, int]],
) -> dict[str, Any] | None:
    """Counts of test targets whose prompt shows image evidence (None: not synthetic data
    of a process whose images carry a latent, or a model that does not see images)."""
    from mmtpp.sources.synthetic import SynthConfig, sequence_profile, sequence_regimes

    generator = info.source.get("generator")
    if not generator or "image" not in card.modalities:
        return None
    cfg = SynthConfig(**generator)
    if cfg.process not in ("regime", "profile"):
        return None
    by_seq: dict[str, list[int]] = {}
    for s, t in targets:
        by_seq.setdefault(s, []).append(int(t))
    hits = favourites = total = 0
    for seq_id, ts in by_seq.items():
        seq = sequences[seq_id]
        index = int(seq_id.rsplit("-", 1)[-1])
        et = renderer.event_tokens([seq], counter)[0]
        if cfg.process == "regime":
            true, view = sequence_regimes(cfg, index)
        else:
            drawn, hints = sequence_profile(cfg, index)
        for t, shown in zip(ts, _windows(card, renderer, et, ts), strict=True):
            total += 1
            if cfg.process == "regime":
                hits += bool((view[shown] == true[t]).any())
            else:
                previous = seq.type[t - 1]
                same = shown[seq.type[shown] == previous]
                hits += bool(same.size)
                favourites += bool((hints[same] == drawn.favourites[previous]).any())
    out: dict[str, Any] = {"process": cfg.process, "targets": total, "with_evidence": hits}
    if cfg.process == "profile":
        out["showing_the_true_favourite"] = favourites
    return out
