"""The hardware a process computes on, decided in one place for training and serving:
- the device TUNERY_DEVICE names: "auto" (the first CUDA GPU when there is one, else the CPU),
  "cpu", "cuda" or "cuda:N", refused with a clear message when it is not there;
- the devices a worker trains one job on, a process each (TUNERY_WORKER_DEVICES: "cpu:2",
  "cuda:0,cuda:1"; unset, one process on TUNERY_DEVICE's device);
- the dtypes: bfloat16 on CUDA (training and serving; float32 training and float16 serving on a
  GPU too old for bfloat16), serving in bfloat16 on CPUs with native bfloat16 arithmetic;
- the attention implementation transformers runs (TUNERY_ATTENTION): "auto" takes FlashAttention 2
  on CUDA when the flash-attn package is installed, and otherwise transformers' own default
  (PyTorch's scaled_dot_product_attention, "sdpa", for every model that supports it)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

ATTENTION_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


class DeviceError(ValueError):
    """A device or attention setting this machine cannot honour; the message says which and why."""


def resolve_device(name: str) -> torch.device:
    """The torch device a TUNERY_DEVICE value names, checked against what this machine has."""
    wanted = name.strip().lower()
    if wanted == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", wanted):
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceError(f"TUNERY_DEVICE={name}: this process sees no CUDA device (torch {torch.__version__}, "
                              f"{built}).")
        index = int(wanted.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(f"TUNERY_DEVICE={name}: there is no GPU {index}; this process sees "
                              f"{torch.cuda.device_count()} (cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
        return torch.device("cuda", index)
    raise DeviceError(f"TUNERY_DEVICE={name!r} is not a device: use auto, cpu, cuda or cuda:N.")


def worker_devices(setting: str | None, device: str) -> list[torch.device]:
    """The devices a worker trains a job on, one process each: TUNERY_WORKER_DEVICES ("cpu:N", N
    processes on the CPU; "cuda:0,cuda:1", one process per GPU, each at most once), or when unset
    the one device TUNERY_DEVICE names."""
    if not setting or not setting.strip():
        return [resolve_device(device)]
    names = [name.strip().lower() for name in setting.split(",")]
    if len(names) == 1 and (found := re.fullmatch(r"cpu(?::(\d+))?", names[0])):
        count = int(found.group(1) or 1)
        if count < 1:
            raise DeviceError(f"TUNERY_WORKER_DEVICES={setting}: at least one process.")
        return [torch.device("cpu")] * count
    if not all(re.fullmatch(r"cuda:\d+", name) for name in names):
        raise DeviceError(f"TUNERY_WORKER_DEVICES={setting!r}: use cpu:N (N processes on the CPU) or a list of GPUs "
                          f"such as cuda:0,cuda:1.")
    if len(set(names)) < len(names):
        raise DeviceError(f"TUNERY_WORKER_DEVICES={setting}: each GPU at most once (one process per device).")
    return [resolve_device(name) for name in names]


def training_dtype(device: torch.device) -> torch.dtype:
    """The weights' dtype while training: bfloat16 on a GPU that has it (float16 would need loss
    scaling), float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def serving_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype while serving (TUNERY_INFERENCE_DTYPE): "auto" is bfloat16 on CUDA (float16
    on a GPU without it) and on CPUs with native bfloat16 arithmetic (it halves the memory each
    decode step reads, which is what bounds it), float32 elsewhere."""
    if name not in DTYPE_CHOICES:
        raise DeviceError(f"TUNERY_INFERENCE_DTYPE={name!r}: use one of {', '.join(DTYPE_CHOICES)}.")
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def weights_dtype(name: str, device: torch.device, compute: torch.dtype) -> torch.dtype:
    """The dtype the batched decoder keeps its weights in. On a CPU without native bfloat16, "auto"
    keeps them in bfloat16 all the same and computes in float32: a decode step reads every weight
    once and is bound by memory, so half the bytes nearly doubles its speed (the decoder multiplies
    one or two rows in bfloat16, and widens the weights to float32 for more rows, where bfloat16
    arithmetic without hardware support is slow). Any explicit TUNERY_INFERENCE_DTYPE is kept as is."""
    if name == "auto" and device.type == "cpu" and compute == torch.float32:
        return torch.bfloat16
    return compute


def attention_implementation(setting: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """What to pass transformers as attn_implementation (None: its default, SDPA where the model
    supports it)."""
    if setting not in ATTENTION_CHOICES:
        raise DeviceError(f"TUNERY_ATTENTION={setting!r}: use one of {', '.join(ATTENTION_CHOICES)}.")
    flash_usable = (device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
                    and importlib.util.find_spec("flash_attn") is not None)
    if setting == "flash_attention_2" and not flash_usable:
        raise DeviceError("TUNERY_ATTENTION=flash_attention_2 needs a CUDA device, bfloat16 or float16 weights "
                          "and the flash-attn package.")
    if setting == "auto":
        return "flash_attention_2" if flash_usable else None
    return setting


def check(device: str, attention: str, inference_dtype: str) -> torch.device:
    """The device, once every hardware setting is known to work here (DeviceError otherwise)."""
    found = resolve_device(device)
    attention_implementation(attention, found, training_dtype(found))
    attention_implementation(attention, found, serving_dtype(inference_dtype, found))
    return found


def describe(device: torch.device) -> str:
    """The device in words, for logs and job events ("NVIDIA H100 80GB HBM3 (cuda:0)", "CPU")."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return "CPU"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
