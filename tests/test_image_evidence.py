import pytest

from mmtpp.card import CompressionSpec, ModelCard
from mmtpp.config import ModelConfig
from mmtpp.events import read_info
from mmtpp.image_evidence import image_evidence
from mmtpp.images import ImageSpec, image_token_counter
from mmtpp.sources.synthetic import SynthConfig, synthesize
from mmtpp.templates import Renderer
from mmtpp.tokens import TokenIds, build_tokenizer, load_backend
from mmtpp.validation import read_sequences


@pytest.mark.parametrize("process", ["profile", "regime"])
def test_counts_the_targets_whose_prompt_shows_the_latent(tmp_path, process):
    root = tmp_path / "data"
    synthesize(
        SynthConfig(num_sequences=3, seed=1, process=process, events_per_sequence=(60, 80)), root
    )
    info = read_info(root)
    sequences = {s.seq_id: s for s in read_sequences(root)}
    build_tokenizer(tmp_path / "tok", ["storm north"] * 20, info.num_types)
    tokenizer = load_backend(tmp_path / "tok")
    renderer = Renderer(tokenizer, TokenIds.from_tokenizer(tokenizer, info.num_types))
    counter = image_token_counter(root, ImageSpec())
    targets = [(s, t) for s in sequences for t in (20, 40, 59)]

    def card(**kw):
        return ModelCard(
            stage=2,
            base_path="-",
            model=ModelConfig(),
            num_types=info.num_types,
            type_names=info.type_names,
            budget=256,
            compression=CompressionSpec(delta=0.2),
            image_min_pixels=56 * 56,
            image_max_pixels=112 * 112,
            **kw,
        )

    out = image_evidence(info, card(), renderer, counter, sequences, targets)
    assert out["process"] == process and out["targets"] == 9
    assert 0 < out["with_evidence"] <= 9
    if process == "profile":  # the event before a target is always shown, with its image
        assert out["with_evidence"] == 9
        assert 0 < out["showing_the_true_favourite"] <= 9
    text_only = card(modalities=["time", "type", "text"])
    assert image_evidence(info, text_only, renderer, counter, sequences, targets) is None
