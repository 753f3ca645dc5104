"""Settings from TUNERY_* environment variables; one instance per process, made by get_settings()."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ORGANIZATION = "default"
MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # one uploaded file, unless TUNERY_MAX_UPLOAD_BYTES says otherwise
WORKER_DEVICES_PATTERN = re.compile(r"cpu(:\d+)?|cuda:\d+(\s*,\s*cuda:\d+)*")  # TUNERY_WORKER_DEVICES
WORKER_DEVICES = ("cpu", "cuda")  # what a job may ask for (metadata tunery_device) and a worker trains on
MODEL_CACHE_MB = 2048  # fine-tuned weights kept in memory for serving, unless TUNERY_MODEL_CACHE_MB says otherwise
KV_CACHE_MB = 1024  # the KV cache of each model served, at most, unless TUNERY_KV_CACHE_MB says otherwise
PYTHON_GRADER_TIMEOUT_SECONDS = 30.0  # a python grader's call, unless TUNERY_PYTHON_GRADER_TIMEOUT_SECONDS says otherwise
PYTHON_GRADER_MEMORY_MB = 1024  # a python grader's address space, unless TUNERY_PYTHON_GRADER_MEMORY_MB says otherwise


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_")

    data_dir: Path = Path(".tunery")  # uploaded files, models, the SQLite database; everything stateful
    # The jobs, files and models tables: the SQLite file in the data directory unless this names a
    # PostgreSQL server ("postgresql+psycopg://user:password@host/db"), shared by workers on many machines.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # when set, accepted as organization "default"'s key
    device: str = "auto"  # "auto" (the first GPU when present), "cpu", "cuda" or "cuda:N" (devices.py)
    attention: str = "auto"  # transformers' attention: "auto" (FlashAttention 2 when installed, else SDPA), "sdpa", "eager"
    worker_poll_seconds: float = 0.5  # how often an idle worker looks for a job
    max_upload_bytes: int = MAX_UPLOAD_BYTES  # refused with 413 while the upload streams in
    warm_up: bool = True  # convert the embedded model when a worker starts, not at the first job
    # A worker beats every worker_heartbeat_seconds, from a thread (model loads and validation too);
    # a job whose worker is silent for job_lease_seconds is taken over, within lease + poll seconds.
    job_lease_seconds: float = 25.0
    worker_heartbeat_seconds: float = 5.0
    job_max_attempts: int = 3  # a job whose worker died this many times fails instead of being taken over again
    worker_device: str | None = None  # what `tunery workers` shows and claims follow: cpu | cuda (default: TUNERY_DEVICE's)
    # A job over several processes, one per device, data parallel (training/distributed.py): "cpu:2" (two CPU
    # processes), "cuda:0,cuda:1"; unset: one process on TUNERY_DEVICE's device (devices.worker_devices).
    worker_devices: str | None = None
    # A job over several machines (training/distributed.py): each runs a worker with the same TUNERY_WORKER_DEVICES,
    # the first (node rank 0) claims jobs and the others join its runs at the rendezvous, "host:port" of the first.
    nodes: int = 1
    node_rank: int = 0
    rendezvous: str | None = None
    # Supervised full fine-tuning over several processes: "auto" shards the weights, gradients and optimizer state
    # over them (FSDP2, training/sharded.py); "off" keeps a whole copy on each (plain data parallel).
    sharding: Literal["auto", "off"] = "auto"
    inference_dtype: str = "auto"  # "auto" (bfloat16 on CUDA and CPUs with native bfloat16), "float32", "bfloat16", "float16"
    cpu_backend: str = "auto"  # CPU serving: "auto" (llama.cpp when installed and the model converts to GGUF), "llamacpp", "torch"
    gguf_type: str = "auto"  # llama.cpp's weights: "auto" (q8_0), "q8_0", "q4_0", "q4_1", "f16"
    model_cache_mb: int = MODEL_CACHE_MB  # fine-tuned weights (adapters, full models) kept in memory, LRU
    # The KV cache of each model served (llama.cpp's allocated at once, the torch decoder's grown as needed and
    # shrunk when idle): sequences beyond it wait, and the context served is at most what it holds for one.
    kv_cache_mb: int = KV_CACHE_MB
    model_aliases: str = ""  # "gpt-4o-mini-2024-07-18=Qwen/Qwen2.5-0.5B-Instruct,...": names that stand for models
    # Python graders run code sent with a request (graders/sandbox.py): off unless TUNERY_PYTHON_GRADERS=on; each
    # then runs in a process of its own within these limits (wall time, address space).
    python_graders: bool = False
    python_grader_timeout_seconds: float = PYTHON_GRADER_TIMEOUT_SECONDS
    python_grader_memory_mb: int = PYTHON_GRADER_MEMORY_MB

    @field_validator("database_url")
    @classmethod
    def _database_usable(cls, url: str | None) -> str | None:
        if url:
            from tunery.storage.db import engine_url

            engine_url(url)  # DatabaseError (a ValueError) naming what is wrong
        return url or None

    @field_validator("worker_device")
    @classmethod
    def _worker_device_known(cls, device: str | None) -> str | None:
        if device is not None and device not in WORKER_DEVICES:
            raise ValueError(f"{device!r} is not a worker device: use one of {', '.join(WORKER_DEVICES)}")
        return device

    @field_validator("worker_devices")
    @classmethod
    def _worker_devices_written(cls, devices: str | None) -> str | None:
        if devices is not None and devices.strip() and not WORKER_DEVICES_PATTERN.fullmatch(devices.strip().lower()):
            raise ValueError(f"{devices!r}: use cpu:N (N processes on the CPU) or GPUs such as cuda:0,cuda:1")
        return devices if devices and devices.strip() else None

    @field_validator("rendezvous")
    @classmethod
    def _rendezvous_written(cls, address: str | None) -> str | None:
        if address is not None and address.strip():
            host, _, port = address.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r}: use host:port, the first machine's address and a free port")
            return address.strip()
        return None

    @model_validator(mode="after")
    def _nodes_meet(self) -> "Settings":
        if self.nodes < 1:
            raise ValueError(f"TUNERY_NODES={self.nodes}: at least 1 (the machines one job trains on)")
        if not 0 <= self.node_rank < self.nodes:
            raise ValueError(f"TUNERY_NODE_RANK={self.node_rank}: 0 to {self.nodes - 1} with TUNERY_NODES={self.nodes}")
        if self.nodes > 1 and self.rendezvous is None:
            raise ValueError(f"TUNERY_NODES={self.nodes} needs TUNERY_RENDEZVOUS=host:port, where the machines' "
                             "training processes meet (the first machine's address and a free port)")
        return self

    @field_validator("model_aliases")
    @classmethod
    def _aliases_parse(cls, text: str) -> str:
        parse_aliases(text)
        return text

    @property
    def database(self) -> str:
        """The SQLAlchemy URL of the database: TUNERY_DATABASE_URL, or the data directory's SQLite file."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'tunery.db'}"


def parse_aliases(text: str) -> dict[str, str]:
    """"alias=target,alias=target" (TUNERY_MODEL_ALIASES) as a mapping; ValueError naming a bad pair."""
    aliases = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        alias, _, target = (part.strip() for part in pair.partition("="))
        if not alias or not target or alias == target:
            raise ValueError(f"{pair!r} is not alias=target")
        aliases[alias] = target
    return aliases


@lru_cache
def get_settings() -> Settings:
    return Settings()
