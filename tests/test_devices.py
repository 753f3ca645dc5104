"""The hardware settings (devices.py) on this machine: what TUNERY_DEVICE, TUNERY_ATTENTION and
TUNERY_INFERENCE_DTYPE resolve to, the clear refusals of what is not here (also by `tunery serve`
and `tunery worker`, in one line), and that the attention implementation reaches training."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tunery.devices import DeviceError, attention_implementation, resolve_device, serving_dtype, training_dtype
from tunery.training.batching import pack

CPU = torch.device("cpu")


def test_auto_and_cpu_resolve_to_what_is_here():
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else CPU)
    assert resolve_device(" CPU ") == CPU
    assert training_dtype(CPU) == torch.float32
    assert serving_dtype("float16", CPU) == torch.float16
    assert serving_dtype("auto", CPU) in (torch.float32, torch.bfloat16)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "mps0", ""])
def test_a_device_name_that_is_no_device_is_refused(name):
    with pytest.raises(DeviceError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_gpu_that_is_not_there_is_refused_with_what_torch_sees():
    with pytest.raises(DeviceError, match="sees no CUDA device") as refused:
        resolve_device("cuda:0")
    assert torch.__version__ in str(refused.value)


def test_attention_auto_is_transformers_default_on_the_cpu_and_flash_is_refused_there():
    assert attention_implementation("auto", CPU, torch.float32) is None  # SDPA where the model has it
    assert attention_implementation("eager", CPU, torch.float32) == "eager"
    with pytest.raises(DeviceError, match="flash_attention_2 needs a CUDA device"):
        attention_implementation("flash_attention_2", CPU, torch.bfloat16)
    with pytest.raises(DeviceError, match="TUNERY_ATTENTION='fast'"):
        attention_implementation("fast", CPU, torch.float32)
    with pytest.raises(DeviceError, match="TUNERY_INFERENCE_DTYPE='int8'"):
        serving_dtype("int8", CPU)


def test_training_runs_the_attention_asked_for_with_the_same_losses(train_tiny):
    """SDPA (the default) and eager attention are two ways to the same numbers, packed rows included."""
    sdpa, sdpa_run = train_tiny(n_epochs=1)
    eager, eager_run = train_tiny(n_epochs=1, attention="eager")
    assert sdpa.model.config._attn_implementation == "sdpa"
    assert eager.model.config._attn_implementation == "eager"
    losses = [m.train_loss for m in sdpa_run.history], [m.train_loss for m in eager_run.history]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    # Several examples share each packed row, so the block-diagonal masks were compared too.
    assert pack(sdpa.examples[:4], sdpa.pad_id).input_ids.shape[0] == 1


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_a_device_setting_in_one_line(command, tmp_path):
    env = {"TUNERY_DEVICE": "cuda:7" if not torch.cuda.is_available() else "tpu", "PATH": "/usr/bin:/bin",
           "TUNERY_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tunery", command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("Error: TUNERY_DEVICE=")


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_a_worker_devices_setting_in_one_line(command, tmp_path):
    setting = "cuda:0,cuda:1" if not torch.cuda.is_available() else "tpu:2"
    env = {"TUNERY_WORKER_DEVICES": setting, "PATH": "/usr/bin:/bin", "TUNERY_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tunery", command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("Error: TUNERY_WORKER_DEVICES")
