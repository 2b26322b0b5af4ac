"""Training losses: next-token cross-entropy on the response tokens of stage-2 examples,
averaged per example or per token (design §6)."""

from __future__ import annotations

from mmtpp.templates import IGNORE_INDEX


def next_token_mask(labels):
    """``[B, S]`` bool: the positions whose next token is a target (the only logits a
    stage-2 loss needs: ``logits_to_keep`` computes just these)."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def response_loss(logits, labels, average: str = "example"):
    """Next-token cross-entropy on the labelled tokens, ``average``'d per ``example`` (over
    each row's tokens, then over rows) or per ``token``.

    ``logits`` are the full ``[B, S, V]`` or only those at ``next_token_mask(labels)``
    (``[K, V]``, row-major). Averaged per example, every stage-2 example weighs the same
    whatever its response length: averaged over tokens instead, a type response (one
    informative token in four) would get a few percent of the gradient next to text
    responses of dozens of tokens, and type prediction would not be learnt.
    """
    import torch
    import torch.nn.functional as F

    keep = next_token_mask(labels)
    if logits.ndim == 3:
        logits = logits[keep]
    targets = labels[:, 1:][keep[:, :-1]]
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    if average == "token":
        return ce.mean()
    rows = keep.nonzero()[:, 0]
    counts = torch.bincount(rows, minlength=labels.shape[0])
    per_row = torch.zeros(labels.shape[0], device=ce.device).index_add_(0, rows, ce)
    return (per_row / counts.clamp(min=1))[counts > 0].mean()
