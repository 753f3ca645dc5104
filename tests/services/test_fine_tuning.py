"""The jobs service on a real database with no worker running, so jobs stay active."""

from __future__ import annotations

import pytest

from tests.helpers import MARV
from tunery.config import Settings
from tunery.errors import RateLimited
from tunery.protocol.fine_tuning import CreateJobRequest
from tunery.services.container import Container
from tunery.services.fine_tuning import MAX_ACTIVE_JOBS


def test_too_many_active_jobs_answer_429_until_one_ends(database):
    container = Container(Settings(warm_up=False))
    org = container.organizations.repo.ensure("default")
    file = container.files.create(org.id, "marv.jsonl", "fine-tune", [MARV])
    request = CreateJobRequest(model="SmolLM2-135M-Instruct", training_file=file.id)
    jobs = [container.jobs.create(org.id, request) for _ in range(MAX_ACTIVE_JOBS)]
    with pytest.raises(RateLimited) as caught:
        container.jobs.create(org.id, request)
    assert caught.value.status_code == 429
    other = container.organizations.repo.ensure("other")  # the limit is per organization
    other_file = container.files.create(other.id, "marv.jsonl", "fine-tune", [MARV])
    container.jobs.create(other.id, CreateJobRequest(model="SmolLM2-135M-Instruct", training_file=other_file.id))
    container.jobs.cancel(org.id, jobs[0].id)
    assert container.jobs.create(org.id, request).status == "validating_files"


def test_a_jobs_device_comes_from_its_metadata_and_must_be_a_worker_device(database):
    from tunery.errors import InvalidRequest

    container = Container(Settings(warm_up=False))
    org = container.organizations.repo.ensure("default")
    file = container.files.create(org.id, "marv.jsonl", "fine-tune", [MARV])
    request = CreateJobRequest(model="SmolLM2-135M-Instruct", training_file=file.id,
                               metadata={"tunery_device": "cuda", "team": "search"})
    job = container.jobs.create(org.id, request)
    assert container.jobs.repo.get(org.id, job.id).device == "cuda"
    assert job.metadata == {"tunery_device": "cuda", "team": "search"}
    with pytest.raises(InvalidRequest) as caught:
        container.jobs.create(org.id, request.model_copy(update={"metadata": {"tunery_device": "tpu"}}))
    assert caught.value.param == "metadata.tunery_device"
