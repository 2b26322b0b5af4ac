from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
CU = "cu128"  # the CUDA of the rayproject/ray images and of what the launcher installs


def _runtime_envs():
    """(name, runtime env dict) of every runtime env the cluster files hand to Ray."""
    kuberay = yaml.safe_load((ROOT / "cluster/kuberay.yaml").read_text())
    return [
        ("runtime_env.yaml", yaml.safe_load((ROOT / "cluster/runtime_env.yaml").read_text())),
        ("kuberay.yaml", yaml.safe_load(kuberay["spec"]["runtimeEnvYAML"])),
    ]


def test_runtime_envs_pin_torch_to_the_images_cuda_and_ray_accepts_them():
    from ray.runtime_env import RuntimeEnv

    for name, env in _runtime_envs():
        pip = RuntimeEnv(**env)["pip"]  # Ray's own validation
        torch = [p for p in pip["packages"] if p.startswith("torch")]
        assert torch == [f"torch==2.13.0+{CU}"], name
        assert f"https://download.pytorch.org/whl/{CU}" in pip["pip_install_options"], name


def test_launcher_installs_that_torch_and_requires_the_efs_helper():
    launcher = yaml.safe_load((ROOT / "cluster/gpu_cluster.yaml").read_text())
    setup = launcher["setup_commands"]
    assert any(f"torch==2.13.0+{CU}" in c and f"whl/{CU}" in c for c in setup)
    check = next(i for i, c in enumerate(setup) if "command -v mount.efs" in c)
    mount = next(i for i, c in enumerate(setup) if "mount -t efs" in c)
    assert check < mount and "exit 1" in setup[check]


def test_kuberay_gpu_pods_tolerate_gpu_taints_and_the_head_does_not():
    spec = yaml.safe_load((ROOT / "cluster/kuberay.yaml").read_text())["spec"]["rayClusterSpec"]
    (gpu,) = spec["workerGroupSpecs"]
    pod = gpu["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert "tolerations" not in spec["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
    assert "/dev/shm" in mounts
