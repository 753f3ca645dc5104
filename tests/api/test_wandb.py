"""The Weights & Biases integration, offline: the run the worker writes holds the job's name,
tags, configuration and every step's metrics (read back from the run file itself)."""

from __future__ import annotations

import json
import struct

import openai
import pytest
from wandb.proto import wandb_internal_pb2

from tests.helpers import TINY_MODEL, upload, wait_until_finished

BLOCK = 32 * 1024  # the run file is a LevelDB-style log: 32 KB blocks of checksummed records
HEADER = 7  # b":W&B", a 2-byte key and a version byte


def run_records(path) -> list:
    """Every protobuf Record of a .wandb run file."""
    data = path.read_bytes()
    assert data.startswith(b":W&B")
    records, pending, offset = [], b"", HEADER
    while offset + 7 <= len(data):
        if BLOCK - offset % BLOCK < 7:  # too little left in the block for a header: padding
            offset += BLOCK - offset % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if length == 0 and kind == 0:
            break
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def key_of(item) -> str:
    return item.key or ".".join(item.nested_key)  # newer wandb writes nested keys


@pytest.fixture
def offline_server(start_server, tiny_model_dir):
    return start_server(base_models=(tiny_model_dir,), env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})


def test_the_offline_run_holds_the_jobs_configuration_and_metrics(offline_server):
    client = offline_server.client()
    job = client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=upload(client).id, hyperparameters={"n_epochs": 2, "batch_size": 4},
        integrations=[{"type": "wandb", "wandb": {"project": "tunery-tests", "tags": ["nightly"]}}])
    assert job.integrations[0].wandb.project == "tunery-tests"
    job = wait_until_finished(client, job.id)
    assert job.status == "succeeded", job.error

    (run_file,) = (offline_server.data_dir / "wandb").rglob(f"run-{job.id}.wandb")
    records = run_records(run_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_id == job.id and run.display_name == job.id and run.project == "tunery-tests"
    assert set(run.tags) == {job.id, TINY_MODEL, "fine-tuning", "nightly"}
    updates = [run.config] + [r.config for r in records if r.WhichOneof("record_type") == "config"]
    config = {key_of(item): json.loads(item.value_json) for update in updates for item in update.update}
    assert config["hyperparameters"]["n_epochs"] == 2 and config["base_model"] == TINY_MODEL
    history = [{key_of(item): json.loads(item.value_json) for item in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    steps = {h["step"]: h for h in history if "train_loss" in h}
    assert sorted(steps) == list(range(1, 7))  # 12 examples in batches of 4, twice
    events = {e.data["step"]: e.data["train_loss"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
              if e.type == "metrics"}
    assert all(steps[s]["train_loss"] == pytest.approx(events[s]) for s in steps)


@pytest.mark.parametrize("integration", [{"type": "slack"}, {"type": "wandb", "wandb": {}},
                                         {"type": "wandb", "wandb": {"project": "p", "tags": ["x" * 65]}}])
def test_malformed_integrations_are_refused(client, integration):
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client).id, integrations=[integration])
    assert caught.value.body["param"] == "integrations"
