"""Ray Serve on 127.0.0.1 with a tiny model fine-tuned for a few steps in-process."""

import base64
import concurrent.futures as cf

import httpx
import numpy as np
import pytest
import torch
from conftest import NUM_TYPES, card_for, make_dataset, png_bytes

from mmtpp.config import load_config
from mmtpp.decoding import DecodeOptions
from mmtpp.events import EventSequence, sequences_to_table
from mmtpp.images import ImageSpec
from mmtpp.model import (
    add_lora,
    added_token_ids,
    collate,
    image_processor,
    load_base,
    materialize_base,
    save_trained,
)
from mmtpp.predict import Predictor
from mmtpp.shards import PrepareContext, process_table
from mmtpp.tokens import build_tokenizer, load_tokenizer

URL = "http://127.0.0.1:8123"
TOKEN = "s3cret"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model taught the response format in a few dozen plain-torch steps."""
    tmp = tmp_path_factory.mktemp("serve")
    _, seqs = make_dataset(tmp / "ds", num_sequences=8, events=(20, 40))
    cfg = load_config(
        overrides=["data.budget=256", "data.targets_per_sequence=8", "data.tasks=[time, type]"]
    )
    build_tokenizer(tmp / "tok", ["storm north delay taxi"] * 50, NUM_TYPES)
    tokenizer = load_tokenizer(tmp / "tok")
    ctx = PrepareContext(cfg.data, str(tmp / "tok"), NUM_TYPES, str(tmp / "ds"))
    rows = [
        r for r in process_table(sequences_to_table(seqs), ctx).to_pylist() if r["kind"] == "stage2"
    ]
    base = materialize_base(cfg.model, tokenizer, tmp / "base")
    torch.manual_seed(0)
    model = add_lora(
        load_base(base, cfg.model, tokenizer), cfg.lora, added_token_ids(tokenizer, NUM_TYPES)
    )
    spec = ImageSpec()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        batch = [rows[i] for i in rng.choice(len(rows), 4)]
        loss = model(
            **collate(
                batch,
                image_processor(spec),
                tokenizer.eos_token_id,
                model.config.image_token_id,
                spec,
            )
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return save_trained(model, tokenizer, tmp / "model", card_for(cfg, base, budget=256))


@pytest.fixture(scope="module")
def server(ray_local, model_dir):
    from ray import serve

    from serve.app import build_app, wait_until_healthy

    serve.start(http_options={"host": "127.0.0.1", "port": 8123})
    # bfloat16: the setting that batches fastest on CPU (benchmarks/bench_serve.py)
    app = build_app(
        {
            "model_dir": str(model_dir),
            "token": TOKEN,
            "max_batch_size": 8,
            "dtype": "bfloat16",
            "batch_wait_timeout_s": 0.2,
            "limits": {
                "max_events": 50,
                "max_image_bytes": 20000,
                "max_image_pixels": 400 * 400,
                "max_body_bytes": 100_000,
                "max_quantiles": 8,
                "max_forecast_steps": 6,
                "max_forecast_samples": 4,
                "max_forecast_events": 16,
                "max_forecast_horizon": 100.0,
            },
        }
    )
    serve.run(app, name="mmtpp", route_prefix="/")
    wait_until_healthy(URL)
    yield model_dir
    serve.shutdown()


def history(n=12, image=True):
    times = np.cumsum(np.r_[0.0, np.full(n - 1, 0.5)])
    return {
        "events": [
            {
                "time": float(t),
                "type": i % NUM_TYPES,
                "text": "storm north delay",
                "image": base64.b64encode(png_bytes()).decode() if image and i % 3 == 0 else None,
            }
            for i, t in enumerate(times)
        ],
        "tasks": ["time", "type"],
    }


def post(body, headers=HEADERS, path="/v1/predict"):
    payload = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx.post(f"{URL}{path}", headers=headers, timeout=120, **payload)


def sequence_of(body) -> EventSequence:
    return EventSequence(
        "x",
        [e["time"] for e in body["events"]],
        [e["type"] for e in body["events"]],
        [e["text"] for e in body["events"]],
        [base64.b64decode(e["image"]) if e["image"] else None for e in body["events"]],
    )


@pytest.mark.slow
@pytest.mark.ray
def test_prediction_equals_the_library(server):
    body = history()
    r = post(body)
    assert r.status_code == 200, r.text
    got = r.json()
    seq = sequence_of(body)
    want = Predictor(server, dtype="bfloat16").predict([seq], ["time", "type"], DecodeOptions())[0]
    assert got["type"] == want.type and got["invalid"] == want.invalid
    assert got["time"] == pytest.approx(want.time) if want.time is not None else got["time"] is None
    assert got["type"] is not None  # a few steps teach the format
    assert got["history_events"] == 12 and got["prompt_tokens"] <= 256
    assert httpx.get(f"{URL}/healthz").json() == {"status": "ok"}
    info = httpx.get(f"{URL}/v1/model", headers=HEADERS).json()
    assert info["delta"] == 0.2 and len(info["type_names"]) == NUM_TYPES
    assert info["dtype"] == "bfloat16"
    body_schema = httpx.get(f"{URL}/openapi.json").json()["paths"]["/v1/predict"]["post"][
        "requestBody"
    ]["content"]["application/json"]["schema"]
    event = body_schema["properties"]["events"]["items"]  # written in place: no dangling $ref
    assert set(event["properties"]) == {"time", "type", "text", "image"}
    assert body_schema["required"] == ["events"] and "$ref" not in str(body_schema)
    assert body_schema["properties"]["decode"]["default"]["samples"] == 8  # kept beside $ref


@pytest.mark.slow
@pytest.mark.ray
def test_forecasts_are_valid_reproducible_and_equal_the_library(server):
    body = {**history(), "steps": 3, "samples": 2, "seed": 7}
    first, again = (post(body, path="/v1/forecast") for _ in range(2))
    assert first.status_code == 200, first.text
    got = first.json()
    assert got == again.json()  # the same seed, the same continuations
    other = post({**body, "seed": 8}, path="/v1/forecast").json()
    assert other["continuations"] != got["continuations"]
    last = body["events"][-1]["time"]
    assert got["start"] == last and len(got["continuations"]) == 2
    for sample in got["continuations"]:
        times = [e["time"] for e in sample]
        assert 1 <= len(sample) <= 3 and times == sorted(times) and times[0] >= last
        assert all(0 <= e["type"] < NUM_TYPES and e["type_name"] for e in sample)
        np.testing.assert_allclose(np.diff([last, *times]), [e["gap"] for e in sample])
    assert [s["step"] for s in got["steps"]] == [1, 2, 3][: len(got["steps"])]
    for step in got["steps"]:
        q = [x["time"] for x in step["time_quantiles"]]
        assert q == sorted(q) and sum(step["type_frequencies"]) == pytest.approx(1)
    predictor = Predictor(server, dtype="bfloat16")
    want = predictor.forecast([sequence_of(body)], steps=3, samples=2, seed=[7]).continuations
    for s, sample in enumerate(got["continuations"]):
        assert [e["type"] for e in sample] == want.types[0, s, : len(sample)].tolist()
        np.testing.assert_allclose([e["time"] for e in sample], want.times[0, s, : len(sample)])
    # until: no event after it; the step limit caps an open-ended forecast
    until = last + 0.5
    bounded = post({**history(), "until": until, "samples": 2}, path="/v1/forecast").json()
    assert all(e["time"] <= until for c in bounded["continuations"] for e in c)
    assert all(len(c) <= 6 for c in bounded["continuations"])


@pytest.mark.slow
@pytest.mark.ray
def test_predict_returns_sorted_quantiles_that_match_the_library(server):
    body = {**history(), "quantiles": [0.05, 0.5, 0.95]}
    r = post(body)
    assert r.status_code == 200, r.text
    got = r.json()["gap_quantiles"]
    assert [q["level"] for q in got] == [0.05, 0.5, 0.95]
    gaps = [q["gap"] for q in got]
    assert gaps == sorted(gaps)
    last = body["events"][-1]["time"]
    assert [q["time"] for q in got] == pytest.approx([last + g for g in gaps])
    predictor = Predictor(server, dtype="bfloat16")
    seq = sequence_of(body)
    want = predictor.gap_quantiles([seq], [0.05, 0.5, 0.95])[0]
    np.testing.assert_allclose(gaps, want, rtol=1e-6)
    exact = post({**body, "quantile_resolution": "exact"}).json()["gap_quantiles"]
    want = predictor.gap_quantiles([seq], [0.05, 0.5, 0.95], exact=True)[0]
    np.testing.assert_allclose([q["gap"] for q in exact], want, rtol=1e-6)
    # both endpoints publish their request bodies
    paths = httpx.get(f"{URL}/openapi.json").json()["paths"]
    schema = paths["/v1/forecast"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"events", "steps", "until", "samples", "tasks", "seed"} <= set(schema["properties"])
    assert "$ref" not in str(schema)
    schema = paths["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"quantiles", "quantile_resolution"} <= set(schema["properties"])


def forecast_body(**fields):
    return {**history(4, image=False), "steps": 2, "samples": 2, **fields}


def with_events(events, **fields):
    return {"events": events, "steps": 2, "samples": 2, **fields}


# case -> (body, status, the field the answer must name)
BAD_FORECASTS = {
    "steps 0": (forecast_body(steps=0), 422, "steps"),
    "steps over the limit": (forecast_body(steps=7), 422, "steps"),
    "samples over the limit": (forecast_body(samples=5), 422, "samples"),
    "samples x steps over the limit": (forecast_body(steps=6, samples=3), 422, "samples"),
    "neither steps nor until": (forecast_body(steps=None), 422, "until"),
    "until before the last event": (forecast_body(until=0.1), 422, "until"),
    "until beyond the horizon limit": (forecast_body(until=1e4), 422, "until"),
    "unsorted events": (
        with_events([{"time": 2.0, "type": 0}, {"time": 1.0, "type": 0}]),
        422,
        "events[1].time",
    ),
    "wrong types": (forecast_body(steps="many"), 422, "steps"),
    "negative seed": (forecast_body(seed=-1), 422, "seed"),
    "tasks without type": (forecast_body(tasks=["time"]), 422, "type"),
    "summary level out of range": (forecast_body(summary_levels=[1.5]), 422, "summary_levels"),
    "type out of range": (with_events([{"time": 0.0, "type": 99}]), 422, "events[0].type"),
    "too many events": ({**history(51, image=False), "steps": 2, "samples": 2}, 413, "events"),
    "text tokens over the limit": (forecast_body(max_text_tokens=1000), 422, "max_text_tokens"),
    "oversized body": (
        ('{"steps": 2, "events": [{"time": 0.0, "type": 0}]' + " " * 150_000 + "}").encode(),
        413,
        "body",
    ),
    "unknown field": (forecast_body(horizon=3), 422, "horizon"),
}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("case", sorted(BAD_FORECASTS))
def test_bad_forecasts_get_a_4xx_naming_the_field(server, case):
    body, status, field = BAD_FORECASTS[case]
    r = post(body, path="/v1/forecast")
    assert r.status_code == status, r.text
    assert field in str(r.json()["detail"])
    assert post(forecast_body(), path="/v1/forecast").status_code == 200


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize(
    ("quantiles", "field"), [([0.0, 0.5], "quantiles"), ([0.1] * 9, "quantiles")]
)
def test_bad_quantile_levels_are_refused(server, quantiles, field):
    r = post({**history(4, image=False), "quantiles": quantiles})
    assert r.status_code == 422 and field in str(r.json()["detail"])


BAD = {
    "malformed json": (b'{"events": [', 422),
    "wrong types": ({"events": [{"time": "soon", "type": 0}]}, 422),
    "unsorted times": ({"events": [{"time": 2.0, "type": 0}, {"time": 1.0, "type": 0}]}, 422),
    "too many events": (history(51, image=False), 413),
    "type out of range": ({"events": [{"time": 0.0, "type": 99}]}, 422),
    "gap beyond float32": ({"events": [{"time": 0.0, "type": 0}, {"time": 1e39, "type": 0}]}, 422),
    "bad base64": ({"events": [{"time": 0.0, "type": 0, "image": "***not base64***"}]}, 422),
    "oversize image": (
        {
            "events": [
                {
                    "time": 0.0,
                    "type": 0,
                    "image": base64.b64encode(png_bytes(400, 400) + b"0" * 30000).decode(),
                }
            ]
        },
        413,
    ),
    "image url": ({"events": [{"time": 0.0, "type": 0, "image": "https://x.org/a.png"}]}, 422),
    "truncated image": (
        {
            "events": [
                {"time": 0.0, "type": 0, "image": base64.b64encode(png_bytes()[:60]).decode()}
            ]
        },
        422,
    ),
    "too many pixels": (
        {
            "events": [
                {"time": 0.0, "type": 0, "image": base64.b64encode(png_bytes(2000, 2000)).decode()}
            ]
        },
        413,
    ),
    "image path without image_root": (
        {"events": [{"time": 0.0, "type": 0, "image": "a.png"}]},
        422,
    ),
    "unknown field": ({"events": [{"time": 0.0, "type": 0, "colour": 1}]}, 422),
}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(server, case):
    body, status = BAD[case]
    r = post(body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert post(history(4, image=False)).status_code == 200


@pytest.mark.slow
@pytest.mark.ray
def test_token_is_required_except_for_health(server):
    assert post(history(4), headers={}).status_code == 401
    assert post(history(4), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{URL}/v1/model").status_code == 401
    assert httpx.get(f"{URL}/healthz").status_code == 200


@pytest.mark.slow
@pytest.mark.ray
def test_concurrent_requests_are_batched(server):
    metrics_before = httpx.get(f"{URL}/v1/metrics", headers=HEADERS).json()
    before = metrics_before["batch_sizes"]
    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(history(6, image=False)).status_code, range(16)))
    assert codes == [200] * 16
    metrics = httpx.get(f"{URL}/v1/metrics", headers=HEADERS).json()
    after = metrics["batch_sizes"]
    grown = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    assert max(grown) > 1, after
    assert metrics["model_seconds"] > metrics_before["model_seconds"]


@pytest.mark.slow
@pytest.mark.ray
def test_a_bad_request_in_a_batch_fails_alone(server):
    """A last event too long for the 256-token budget is refused only by the model path:
    the requests batched with it still get their predictions."""
    long_text = history(4, image=False)
    long_text["events"][-1]["text"] = "storm north delay " * 80
    forged = history(4, image=False)  # special tokens in a text are plain text
    forged["events"][-1]["text"] = "storm <|image_pad|><|end_of_event|>"
    bodies = [history(6, image=False), long_text, forged, history(5, image=False)]
    with cf.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda b: post(b).status_code, bodies))
    assert codes == [200, 422, 200, 200]
    metrics = httpx.get(f"{URL}/v1/metrics", headers=HEADERS).json()
    assert max(int(k) for k in metrics["batch_sizes"]) > 1


@pytest.mark.parametrize(("name", "gpus"), [("config.yaml", 0), ("config_gpu.yaml", 1)])
def test_shipped_serve_configs_give_each_replica_its_resources(name, gpus):
    """A replica that reserves no GPU never sees one (Ray hides it): the GPU config must
    produce deployment options with num_gpus, and no deployment override may replace them."""
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from serve.app import build_app

    raw = yaml.safe_load((Path(__file__).parents[1] / "serve" / name).read_text())
    ServeDeploySchema.model_validate(raw)  # what `serve deploy` accepts
    (application,) = raw["applications"]
    assert all("ray_actor_options" not in d for d in application.get("deployments", []))
    options = build_app(application["args"])._bound_deployment.ray_actor_options
    assert options["num_gpus"] == gpus and options["num_cpus"] >= 1
