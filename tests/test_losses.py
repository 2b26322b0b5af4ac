from mmtpp.losses import next_token_mask, response_loss


def test_response_loss_weighs_every_example_the_same():
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    labels = torch.tensor(
        [
            [-100, -100, -100, 2, -100],  # one labelled token
            [-100, 1, 4, 6, 3],  # four
            [-100, -100, -100, -100, -100],
        ]
    )  # none: left out
    ce = [
        F.cross_entropy(logits[r, :-1], labels[r, 1:], ignore_index=-100, reduction="none")
        for r in range(2)
    ]
    want = (ce[0][labels[0, 1:] != -100].mean() + ce[1][labels[1, 1:] != -100].mean()) / 2
    torch.testing.assert_close(response_loss(logits, labels), want)
    token_mean = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
    torch.testing.assert_close(response_loss(logits, labels, "token"), token_mean)
    assert not torch.isclose(response_loss(logits, labels), token_mean)
    # the same from the logits at the kept positions only (what training computes)
    kept = logits[next_token_mask(labels)]
    assert kept.shape == (5, 7)
    torch.testing.assert_close(response_loss(kept, labels), want)
