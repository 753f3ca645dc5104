"""Weights & Biases, as the guide describes it: a job with
`integrations: [{"type": "wandb", "wandb": {"project", "name"?, "entity"?, "tags"?}}]` gets a run
(named and identified by the job id unless given a name) holding its hyperparameters and
configuration and every step's metrics, tagged with the job id, the base model and
"fine-tuning". The run follows wandb's own environment (WANDB_API_KEY, WANDB_MODE=offline, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_TAGS, MAX_TAG_LENGTH = 50, 64  # as OpenAI


class IntegrationError(ValueError):
    pass


def check_integrations(integrations: list[dict[str, Any]] | None) -> None:
    """Raise IntegrationError, naming what is wrong, for anything but well-formed W&B integrations."""
    for index, integration in enumerate(integrations or []):
        where = f"integrations[{index}]"
        if not isinstance(integration, dict) or integration.get("type") != "wandb":
            raise IntegrationError(f"{where}: the only integration type is 'wandb'")
        spec = integration.get("wandb")
        if not isinstance(spec, dict) or not isinstance(spec.get("project"), str) or not spec["project"]:
            raise IntegrationError(f"{where}.wandb needs a 'project'")
        unknown = set(spec) - {"project", "name", "entity", "tags"}
        if unknown:
            raise IntegrationError(f"{where}.wandb has unknown keys {sorted(unknown)}")
        tags = spec.get("tags") or []
        if not isinstance(tags, list) or len(tags) > MAX_TAGS or any(
                not isinstance(t, str) or len(t) > MAX_TAG_LENGTH for t in tags):
            raise IntegrationError(f"{where}.wandb.tags: at most {MAX_TAGS} strings of at most {MAX_TAG_LENGTH} characters")
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise IntegrationError("the W&B integration needs the wandb package on the server "
                                   "(pip install 'tunery[wandb]')") from None


class WandbRuns:
    """The W&B runs of one job (one per wandb integration it names)."""

    def __init__(self, job_id: str, base_model: str, integrations: list[dict[str, Any]] | None,
                 config: dict[str, Any], folder: Path, *, resume: bool = False):
        """resume: the job goes on from a checkpoint, and its runs go on where they stopped."""
        self.runs = []
        specs = [i["wandb"] for i in integrations or [] if i.get("type") == "wandb"]
        if not specs:
            return
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            tags = list(dict.fromkeys([job_id, base_model, "fine-tuning", *(spec.get("tags") or [])]))
            self.runs.append(wandb.init(project=spec["project"], entity=spec.get("entity"), name=spec.get("name") or job_id,
                                        id=job_id, tags=tags, config=config, dir=str(folder), reinit="create_new",
                                        resume="allow" if resume else None))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for run in self.runs:
            run.log(metrics, step=step)

    def finish(self, summary: dict[str, Any] | None = None, exit_code: int = 0) -> None:
        for run in self.runs:
            run.summary.update(summary or {})
            run.finish(exit_code=exit_code)
        self.runs = []
