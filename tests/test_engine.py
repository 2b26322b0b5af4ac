import itertools
import json

import pytest

from mmtpp.config import load_config
from mmtpp.engine import deepspeed_config, lr_lambda


def test_deepspeed_config_follows_ours():
    cfg = load_config(
        overrides=[
            "train.zero_stage=3",
            "train.offload=true",
            "model.dtype=bfloat16",
            "train.micro_batch=2",
            "train.grad_accum=4",
        ]
    )
    ds = deepspeed_config(cfg.train, cfg.model, world_size=8)
    assert ds["train_batch_size"] == 2 * 4 * 8
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_force_ds_cpu_optimizer"] is False  # our AdamW steps the offloaded states
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    cpu = load_config()
    ds = deepspeed_config(cpu.train, cpu.model, world_size=2)
    assert ds["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 50_000_000}
    assert not ds["bf16"]["enabled"]
    assert ds["gradient_clipping"] == 1.0
    with pytest.raises(ValueError, match="offload needs zero_stage=3"):
        load_config(overrides=["train.offload=true"])
    with pytest.raises(ValueError, match=r"train\.loss_average: Input should be .example. or"):
        load_config(overrides=["train.loss_average=row"])


DEEPSPEED_PROBE = """
import os, sys, json
os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1],
                  RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import torch, torch.distributed as dist
dist.init_process_group("gloo", rank=0, world_size=1)
import deepspeed
from mmtpp.card import ModelCard
from mmtpp.compression import CompressionRule
from mmtpp.config import load_config
from mmtpp.engine import backward_and_step, deepspeed_config

def engine(*overrides):
    cfg = load_config(overrides=["train.micro_batch=1", *overrides])
    ds = deepspeed_config(cfg.train, cfg.model, world_size=1)
    for key in ("offload_param", "offload_optimizer"):  # no pinned memory without CUDA
        ds["zero_optimization"].get(key, {}).pop("pin_memory", None)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return deepspeed.initialize(model=model, optimizer=opt, config=ds)[0]

e = engine("train.grad_accum=2")
x = torch.ones(1, 4)
stepped = [backward_and_step(e, e(x).pow(2).sum()) for _ in range(4)]
offloaded = engine("train.zero_stage=3", "train.offload=true")
backward_and_step(offloaded, offloaded(x).pow(2).sum())
print(json.dumps({"stepped": stepped, "global_steps": e.global_steps,
                  "offload_steps": offloaded.global_steps}))
"""


def test_optimizer_steps_are_counted_at_the_accumulation_boundary_and_offload_initializes():
    """With grad_accum=2 the 2nd and 4th micro-batches complete optimizer steps (DeepSpeed's
    own count agrees), and ZeRO-3 offload accepts our torch AdamW."""
    import random
    import subprocess
    import sys

    port = str(random.randint(20000, 40000))
    out = subprocess.run(
        [sys.executable, "-c", DEEPSPEED_PROBE, port], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"stepped": [False, True, False, True], "global_steps": 2, "offload_steps": 1}


def test_lr_schedule_warms_up_then_decays():
    f = lr_lambda(warmup=4, total=20)
    values = [f(s) for s in range(25)]
    assert values[0] == 0.25 and values[3] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
    assert values[20] == pytest.approx(0.1) and values[24] == pytest.approx(0.1)
