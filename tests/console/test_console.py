"""The console in a real browser (headless Chromium through Playwright) against a real `tunery
serve` with the tiny model: sign-in, the jobs list and a job's live charts, creating a job from
a file whose planted error blocks it, a DPO job's reward charts and a DPO job created with its beta
(a refused beta shown in the form), the playground comparing a base and a fine-tuned model,
a fine-tuned model downloaded from the Models page, what users wrote shown as text and never
run, and the pages usable at phone width with every control labelled. Each test's screenshot
lands in test-artifacts/console/."""

from __future__ import annotations

import json
import time
import zipfile

import httpx
import pytest
from typer.testing import CliRunner

from tests.helpers import (CELLS, COLOR_PREFERENCES, MARV, PAYLOAD, SCREENSHOTS, TEST_KEY, TINY_MODEL, UNLABELLED,
                           jsonl, key_for, sign_in, upload, wait_until_finished)
from tunery.cli import app

PREFERENCES = jsonl(COLOR_PREFERENCES)  # 12 DPO pairs


def choose_model(page, model: str) -> None:
    """Types the model's name (a list suggests this server's models) and leaves the field."""
    field = page.get_by_label("Base or fine-tuned model")
    field.fill(model)
    field.blur()  # as a person leaves the field: it changes, and the list of suggestions closes


def metrics_events(client, job_id: str) -> int:
    """The job's metrics events, every page of them (the SDK pages through)."""
    return sum(1 for e in client.fine_tuning.jobs.list_events(job_id, limit=100) if e.type == "metrics")


def metrics_by_step(client, job_id: str) -> dict[int, dict]:
    """Each step's metrics (the newest event of a step, as the console keeps it)."""
    steps: dict[int, dict] = {}
    for event in client.fine_tuning.jobs.list_events(job_id, limit=100):  # newest first
        if event.type == "metrics":
            steps.setdefault(event.data["step"], event.data)
    return steps


def shown(value) -> str:
    """A figure as the console writes it (dom.js number()): an integer as is, else 4 decimals."""
    return "" if value is None else str(int(value)) if float(value).is_integer() else f"{value:.4f}"


def chart_table(page, title: str) -> tuple[list[str], list[list[str]]]:
    """A chart's table of numbers (the data uPlot was given): its columns and rows of cells."""
    figure = page.locator("figure.chart").filter(has=page.locator("figcaption", has_text=title))
    columns = figure.locator("details thead th").all_text_contents()  # in a closed <details>: not rendered
    return columns, figure.locator("details tbody tr").evaluate_all(CELLS)


@pytest.fixture(scope="module")
def dpo_job(tiny_server):
    """A finished DPO job on the colour pairs, with a validation file and beta auto: 3 epochs of
    6 steps (12 pairs, 2 a batch)."""
    client = tiny_server.client()
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client, PREFERENCES, "pairs.jsonl").id,
                                         validation_file=upload(client, PREFERENCES, "pairs.jsonl").id, suffix="prefs",
                                         seed=7, method={"type": "dpo", "dpo": {"hyperparameters": {
                                             "beta": "auto", "n_epochs": 3, "batch_size": 2}}})
    return wait_until_finished(client, job.id)


@pytest.fixture(scope="module")
def finished_job(tiny_server):
    client = tiny_server.client()
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client).id, suffix="console",
                                         validation_file=upload(client).id,
                                         hyperparameters={"n_epochs": 2, "batch_size": 1})  # 24 steps
    return wait_until_finished(client, job.id)


def test_sign_in_with_a_key_and_sign_out_forgets_it(page, tiny_server):
    page.goto(tiny_server.base_url.removesuffix("/v1") + "/")
    page.get_by_label("API key").fill("sk-tunery-wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="not valid").wait_for()
    sign_in(page, tiny_server)
    assert TEST_KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('tunery.apiKey')") == TEST_KEY
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("sessionStorage.getItem('tunery.apiKey') || localStorage.getItem('tunery.apiKey')") is None
    page.goto(tiny_server.base_url.removesuffix("/v1") + "/#/jobs")  # the key is gone: signing in again is needed
    page.get_by_label("API key").wait_for()


def test_a_key_revoked_while_a_page_polls_brings_back_the_sign_in_form_and_leaves_it_alone(page, tiny_server):
    key = key_for(tiny_server, "console-revoked")
    sign_in(page, tiny_server, key)
    listed = CliRunner().invoke(app, ["keys", "list", "--json", "--data-dir", str(tiny_server.data_dir)])
    key_id = next(k["id"] for k in json.loads(listed.output) if k["organization"] == "console-revoked")
    assert CliRunner().invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tiny_server.data_dir)]).exit_code == 0
    page.get_by_role("alert").filter(has_text="no longer accepted").wait_for()  # the jobs list polls every 2 s
    page.get_by_label("API key").fill("sk-half-typed")
    page.wait_for_timeout(7000)  # nothing polls any more: what the person typed stays
    assert page.get_by_label("API key").input_value() == "sk-half-typed"


def test_the_console_is_served_with_a_content_security_policy(tiny_server):
    root = tiny_server.base_url.removesuffix("/v1")
    page = httpx.get(root + "/")
    assert page.status_code == 200 and "tunery" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "form-action 'none'" in policy
    assert httpx.get(root + "/console/static/vendor/uplot/uPlot.iife.min.js").status_code == 200


def test_a_job_created_through_the_sdk_is_listed_and_its_chart_has_a_point_per_metrics_event(page, tiny_server,
                                                                                             finished_job):
    sign_in(page, tiny_server)
    row = page.locator(f"tr[data-job='{finished_job.id}']")
    row.wait_for()
    assert "succeeded" in row.inner_text() and "console" in row.inner_text()
    assert finished_job.fine_tuned_model in row.inner_text()
    page.get_by_role("link", name=finished_job.id).click()
    steps = metrics_events(tiny_server.client(), finished_job.id)
    assert steps == 24  # 12 examples, batch 1, 2 epochs
    loss = page.locator("figure.chart", has_text="Loss").first
    page.wait_for_function("n => document.querySelector('figure.chart').dataset.points == n", arg=str(steps))
    assert loss.locator("canvas").count() >= 1  # uPlot drew it
    assert loss.locator("details tbody tr").count() == steps
    columns = loss.locator("details thead th").all_text_contents()  # in a closed <details>: not rendered
    assert columns == ["step", "Training loss", "Validation loss", "Full validation loss (epoch end)"]
    full = [cell for cell in loss.locator("details tbody tr td:last-child").all_text_contents() if cell]
    assert len(full) == 2  # one full validation per epoch
    assert page.locator("figure.chart figcaption").all_text_contents() == ["Loss", "Token accuracy"]
    assert page.locator(".title-row .method-tag").inner_text() == "Supervised"
    page.get_by_role("heading", name="Checkpoints").wait_for()
    assert page.locator("a", has_text="Try in playground").count() >= 2  # the model and each checkpoint
    assert page.get_by_role("button", name="Download result file").is_visible()


def test_a_dpo_jobs_page_charts_its_reward_margin_and_accuracy_beside_the_loss(page, tiny_server, dpo_job):
    assert dpo_job.status == "succeeded", dpo_job.error
    steps = metrics_by_step(tiny_server.client(), dpo_job.id)
    assert sorted(steps) == list(range(1, 19))  # 12 pairs, 2 a batch, 3 epochs
    sign_in(page, tiny_server)
    page.goto(tiny_server.base_url.removesuffix("/v1") + f"/#/jobs/{dpo_job.id}")
    page.wait_for_function("() => { const charts = [...document.querySelectorAll('figure.chart')]; return charts.length"
                           " === 3 && charts.every(f => f.dataset.points === '18' && f.querySelector('canvas')); }")
    assert page.locator("figure.chart figcaption").all_text_contents() == ["Loss", "Reward margin", "Reward accuracy"]
    about = page.locator("figure.chart", has_text="Reward accuracy").locator(".chart-about")
    assert "share of pairs" in about.inner_text()
    for title, figure in (("Loss", "loss"), ("Reward margin", "reward_margin"), ("Reward accuracy", "reward_accuracy")):
        columns, rows = chart_table(page, title)
        assert columns == ["step", "Training", "Validation", "Full validation (epoch end)"]  # the title names it
        keys = [f"train_{figure}", f"valid_{figure}", f"full_valid_{figure}"]
        assert rows == [[str(step)] + [shown(steps[step].get(key)) for key in keys] for step in range(1, 19)], title
        assert [row[0] for row in rows if row[3]] == ["6", "12", "18"]  # a full validation at each epoch's end
    accuracy = [float(row[1]) for row in chart_table(page, "Reward accuracy")[1]]
    assert all(0 <= a <= 1 for a in accuracy) and len(set(accuracy)) > 1  # it moved: real figures, not a constant

    assert page.locator(".title-row .method-tag").inner_text() == "DPO"
    facts = dict(zip(page.locator("dl dt").all_text_contents(), page.locator("dl dd").all_text_contents()))
    assert facts["Method"] == "DPO (direct preference optimization)"
    assert facts["Beta (how far from the starting model)"] == str(dpo_job.method.dpo.hyperparameters.beta)
    assert facts["Epochs"] == "3" and facts["Batch size"] == "2" and "Prompt loss weight" not in facts
    table = page.locator("table.checkpoints")
    table.locator("tbody tr").nth(1).wait_for()
    assert table.locator("thead th").all_text_contents()[2:8] == [
        "Training loss", "Validation loss", "Full validation loss", "Training reward margin",
        "Training reward accuracy", "Full validation reward accuracy"]
    keys = ("train_loss", "valid_loss", "full_valid_loss", "train_reward_margin", "train_reward_accuracy",
            "full_valid_reward_accuracy")
    for row in table.locator("tbody tr").evaluate_all(CELLS):  # the API's checkpoint metrics and the step's events
        assert row[2:8] == [shown(steps[int(row[0])][key]) for key in keys], row
    page.locator("figure.chart").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "job-dpo.png"), full_page=True)


def test_the_form_creates_a_dpo_job_with_its_beta_and_shows_a_refused_beta(page, tiny_server):
    sign_in(page, tiny_server)
    page.get_by_role("link", name="New job").first.click()
    choose_model(page, TINY_MODEL)
    assert page.get_by_label("Method", exact=True).input_value() == "supervised"
    assert not page.get_by_label("Beta").is_visible()  # supervised fine-tuning has none
    page.get_by_label("Training file: a JSONL file from this computer").set_input_files(
        files={"name": "pairs.jsonl", "mimeType": "application/jsonl", "buffer": PREFERENCES})
    page.locator(".problems.errors").get_by_text("supervised fine-tuning needs").wait_for()  # checked for this method
    create = page.get_by_role("button", name="Create job")
    assert create.is_disabled()

    page.get_by_label("Method", exact=True).select_option("dpo")
    page.get_by_text("The file is valid.").wait_for()  # checked again, as DPO's
    report = page.locator(".report-body").first.inner_text()
    assert "preference format, 12 valid pairs" in report and "Preferred output's tokens" in report
    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Beta").fill("5")  # over the server's limit: its 400, shown in the form
    create.click()
    alert = page.get_by_role("alert").filter(has_text="beta must be greater than 0")
    alert.wait_for()
    beta = page.get_by_label("Beta")
    assert beta.get_attribute("aria-invalid") == "true" and page.evaluate("document.activeElement.name") == "beta"
    note = page.locator(".field-error")  # the message under the field too: the focus took the page up to it
    assert note.count() == 1 and note.inner_text() == alert.inner_text() and note.is_visible()
    assert note.get_attribute("id") in beta.get_attribute("aria-describedby")
    assert "#/jobs/new" in page.url
    page.screenshot(path=str(SCREENSHOTS / "create-dpo-refused-beta.png"))  # what the person sees

    beta.fill("0.3")
    assert beta.get_attribute("aria-invalid") is None and note.count() == 0
    page.get_by_label("Suffix").fill("dpo-form")
    create.click()
    page.wait_for_url("**/#/jobs/ftjob-*")
    job_id = page.url.rsplit("/", 1)[1]
    job = tiny_server.client().fine_tuning.jobs.retrieve(job_id)
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.3
    assert job.method.dpo.hyperparameters.n_epochs == 2 and job.method.dpo.hyperparameters.batch_size == 4
    assert job.user_provided_suffix == "dpo-form"
    page.locator(".title-row .method-tag", has_text="DPO").wait_for()
    page.locator(".title-row .badge", has_text="succeeded").wait_for(timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('figure.chart')[2].dataset.points === '6'")  # 3 steps x 2
    rows = chart_table(page, "Reward accuracy")[1]
    steps = metrics_by_step(tiny_server.client(), job_id)
    assert rows == [[str(s), shown(steps[s]["train_reward_accuracy"])] for s in range(1, 7)]  # no validation file
    facts = dict(zip(page.locator("dl dt").all_text_contents(), page.locator("dl dd").all_text_contents()))
    assert facts["Beta (how far from the starting model)"] == "0.3"


def test_the_jobs_list_pages_through_many_jobs_and_filters_them_by_status(page, tiny_server):
    key = key_for(tiny_server, "console-many")  # an organization of its own: its jobs alone
    client = tiny_server.client(api_key=key)
    file = upload(client)
    jobs = []
    for index in range(25):  # 23 cancelled at once (at most 20 may be active), the last 2 left to run
        jobs.append(client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=file.id, hyperparameters={"n_epochs": 1}))
        if index < 23:
            client.fine_tuning.jobs.cancel(jobs[-1].id)
    sign_in(page, tiny_server, key)
    rows = page.locator("table.jobs tbody tr")
    page.wait_for_function("() => document.querySelectorAll('table.jobs tbody tr').length === 20")
    assert rows.first.get_attribute("data-job") == jobs[-1].id  # newest first
    page.get_by_role("button", name="Older").click()
    page.wait_for_function("() => document.querySelectorAll('table.jobs tbody tr').length === 5")
    assert rows.last.get_attribute("data-job") == jobs[0].id
    assert page.get_by_role("button", name="Older").is_disabled()
    page.get_by_role("button", name="Newer").click()
    page.wait_for_function("() => document.querySelectorAll('table.jobs tbody tr').length === 20")
    page.get_by_label("Status").select_option("cancelled")
    page.wait_for_url("**/#/jobs?status=cancelled")
    page.locator(f"tr[data-job='{jobs[20].id}']").wait_for()  # the 23 cancelled ones, newest first
    # the table is redrawn from the filtered page: wait until the unfiltered rows are gone
    page.wait_for_function("() => [...document.querySelectorAll('table.jobs tbody tr')]"
                           ".every(row => row.innerText.includes('cancelled'))")
    assert page.locator(f"tr[data-job='{jobs[-1].id}']").count() == 0
    assert all("cancelled" in text for text in rows.all_inner_texts())
    for job in jobs[23:]:  # the two left to run, unless they finished meanwhile
        if client.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed", "cancelled"):
            client.fine_tuning.jobs.cancel(job.id)


def test_a_planted_error_blocks_creation_and_the_fixed_file_trains_while_its_chart_grows(page, tiny_server, tmp_path):
    lines = MARV.decode().splitlines()
    broken = list(lines)
    broken[2] = json.dumps({"messages": [{"role": "robot", "content": "beep"}]})
    (tmp_path / "broken.jsonl").write_text("\n".join(broken))
    (tmp_path / "fixed.jsonl").write_text("\n".join(lines))
    sign_in(page, tiny_server)
    page.get_by_role("link", name="New job").first.click()
    choose_model(page, TINY_MODEL)
    page.get_by_label("Training file: a JSONL file from this computer").set_input_files(str(tmp_path / "broken.jsonl"))
    errors = page.locator(".problems.errors")
    errors.wait_for()
    assert "Errors (1)" in errors.inner_text()
    first = errors.locator("tbody tr").first
    assert first.locator("td").nth(0).inner_text() == "3" and first.locator("td").nth(1).inner_text() == "unknown_role"
    create = page.get_by_role("button", name="Create job")
    assert create.is_disabled()
    assert "cannot start a job" in page.locator("#create-blocked").inner_text()

    page.get_by_label("Training file: a JSONL file from this computer").set_input_files(str(tmp_path / "fixed.jsonl"))
    page.get_by_text("The file is valid.").wait_for()
    report = page.locator(".report-body").first.inner_text()
    assert "Default epochs (auto): 9" in report and "Estimated training time on this server" in report
    page.get_by_label("Epochs").fill("12")
    page.get_by_label("Batch size").fill("1")  # 144 steps: a chart that grows point by point
    page.get_by_label("Suffix").fill("grows")
    create.click()
    page.wait_for_url("**/#/jobs/ftjob-*")
    job_id = page.url.rsplit("/", 1)[1]
    seen, deadline = [], time.time() + 180
    status = page.locator(".title-row .badge")
    while (text := status.inner_text() if status.count() else "") != "succeeded":
        assert text != "failed" and time.time() < deadline, text
        points = int(page.locator("figure.chart").first.get_attribute("data-points"))
        if not seen or points != seen[-1]:
            seen.append(points)
        page.wait_for_timeout(250)
    assert any(0 < p < 144 for p in seen), seen  # it grew while the job ran: a partial chart before the whole one
    page.wait_for_function("() => document.querySelector('figure.chart').dataset.points === '144'")
    job = tiny_server.client().fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded" and job.user_provided_suffix == "grows" and job.hyperparameters.n_epochs == 12
    assert job.hyperparameters.batch_size == 1


def test_the_playground_compares_the_base_and_the_fine_tuned_model(page, tiny_server, finished_job):
    sign_in(page, tiny_server)
    page.goto(tiny_server.base_url.removesuffix("/v1") + f"/#/playground?model={finished_job.fine_tuned_model}")
    panels = page.locator("section.panel")
    panels.nth(1).wait_for()  # the fine-tuned model and, beside it, its base
    assert page.get_by_label("Model 1").input_value() == finished_job.fine_tuned_model
    assert page.get_by_label("Model 2").input_value() == TINY_MODEL
    page.get_by_label("Maximum tokens").fill("12")
    page.get_by_label("Message", exact=True).fill("What's the capital of France?")
    page.get_by_label("Message", exact=True).press("Enter")
    for index in range(2):
        panels.nth(index).locator(".stats", has_text="tokens in").wait_for()
        assert panels.nth(index).locator("li.assistant .content").inner_text().strip()
    assert panels.nth(0).locator("li.user").inner_text().endswith("What's the capital of France?")


def test_completions_mode_shows_each_tokens_alternatives(page, tiny_server):
    sign_in(page, tiny_server)
    page.goto(tiny_server.base_url.removesuffix("/v1") + f"/#/playground?mode=completions&model={TINY_MODEL}")
    page.get_by_label("Prompt").fill("Hello")
    page.get_by_label("Maximum tokens").fill("3")
    page.get_by_role("button", name="Complete").click()
    rows = page.locator("table.logprobs tbody tr")
    rows.first.wait_for()
    assert rows.count() == 3 and rows.first.locator("td").nth(2).inner_text().count(",") == 4  # 5 alternatives
    assert page.locator(".token").first.get_attribute("title")


def test_what_users_wrote_is_shown_as_text_and_never_run(page, tiny_server):
    client = tiny_server.client()
    examples = [json.dumps({"messages": [{"role": "user", "content": f"Question {i} {PAYLOAD}"},
                                         {"role": "assistant", "content": PAYLOAD}]}) for i in range(12)]
    file = upload(client, "\n".join(examples).encode(), name="payload.jsonl")
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=file.id, metadata={"note": PAYLOAD},
        hyperparameters={"n_epochs": 15, "learning_rate_multiplier": 10}).id)
    sign_in(page, tiny_server)

    page.goto(tiny_server.base_url.removesuffix("/v1") + f"/#/jobs/{job.id}")
    page.get_by_text(PAYLOAD).first.wait_for()  # the metadata, as text

    page.get_by_role("link", name="Files").click()
    page.locator(f"tr[data-file='{file.id}']").get_by_role("button", name="Preview").click()
    page.locator("article.example").first.get_by_text(PAYLOAD).first.wait_for()

    page.get_by_role("link", name="New job").first.click()
    choose_model(page, TINY_MODEL)
    page.get_by_label("Training file: or one already uploaded").select_option(file.id)
    page.get_by_text("The file is valid.").wait_for()
    page.get_by_label("Suffix").fill(PAYLOAD[:60])
    page.get_by_role("button", name="Create job").click()
    page.get_by_role("alert").filter(has_text="suffix must be").get_by_text(PAYLOAD[:60], exact=False).wait_for()

    page.goto(tiny_server.base_url.removesuffix("/v1") + f"/#/playground?model={job.fine_tuned_model}")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Message", exact=True).fill(f"Question 3 {PAYLOAD}")
    page.get_by_label("Message", exact=True).press("Enter")
    answer = page.locator("section.panel").first.locator("li.assistant .content")
    page.locator("section.panel").first.locator(".stats", has_text="tokens in").wait_for()
    assert "<script>" in answer.inner_text() or "<img" in answer.inner_text(), answer.inner_text()

    assert page.evaluate("window.pwned") is None
    assert page.locator("main script, main img").count() == 0


def test_a_fine_tuned_model_downloads_as_hf_and_gguf_and_a_base_model_offers_no_export(page, tiny_server, finished_job,
                                                                                       tmp_path):
    sign_in(page, tiny_server)
    page.get_by_role("link", name="Models").click()
    row = page.locator(f"tr[data-model='{finished_job.fine_tuned_model}']")
    row.wait_for()
    base = page.locator(f"tr[data-model='{TINY_MODEL}']")
    assert base.get_by_role("button", name="Download").count() == 0 and base.locator("select").count() == 0
    assert row.get_by_label("Export format").input_value() == "hf"
    expected = {"hf": lambda names: "config.json" in names and any(n.endswith(".safetensors") for n in names),
                "gguf": lambda names: any(n.endswith(".gguf") for n in names) and "Modelfile" in names}
    for fmt, holds in expected.items():
        row.get_by_label("Export format").select_option(fmt)
        with page.expect_download(timeout=300_000) as info:  # a first export merges the weights
            row.get_by_role("button", name="Download").click()
        download = info.value
        assert download.suggested_filename.endswith(f"-{fmt}.zip") and "tiny-llama" in download.suggested_filename
        download.save_as(tmp_path / f"{fmt}.zip")
        with zipfile.ZipFile(tmp_path / f"{fmt}.zip") as archive:
            names = archive.namelist()
        assert holds(names), names
        assert row.get_by_role("button", name="Download").is_enabled()

    # While the server prepares a zip the row says so and the button waits; a refusal is shown as text.
    held = []
    page.route(lambda url: url.endswith("/export?format=adapter"), lambda route: held.append(route))
    row.get_by_label("Export format").select_option("adapter")
    row.get_by_role("button", name="Download").click()
    row.get_by_text("Preparing adapter export…").wait_for()
    assert row.get_by_role("button", name="Download").is_disabled() and row.get_by_label("Export format").is_disabled()
    while not held:
        page.wait_for_timeout(50)
    request = held[0].request
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}" and TEST_KEY not in request.url
    page.screenshot(path=str(SCREENSHOTS / "models-export-preparing.png"), full_page=True)
    held[0].fulfill(status=400, json={"error": {"message": "Only a LoRA fine-tune has an adapter: this model was "
                                                "fine-tuned in full (export it as hf or gguf).", "type":
                                                "invalid_request_error", "param": "format", "code": None}})
    row.get_by_role("alert").filter(has_text="Only a LoRA fine-tune has an adapter").wait_for()
    assert row.get_by_role("button", name="Download").is_enabled()
    assert row.get_by_text("Preparing adapter export…").count() == 0


def test_pages_fit_a_phone_and_every_control_has_a_label(page, tiny_server, finished_job, dpo_job):
    sign_in(page, tiny_server)
    for route in ("#/jobs", "#/jobs/new", f"#/jobs/{finished_job.id}", f"#/jobs/{dpo_job.id}", "#/playground",
                  "#/playground?mode=completions", "#/files", "#/models"):
        page.goto(tiny_server.base_url.removesuffix("/v1") + "/" + route)
        page.locator("main h1").wait_for()
        page.wait_for_timeout(300)
        assert page.evaluate(UNLABELLED) == [], route
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(tiny_server.base_url.removesuffix("/v1") + f"/#/jobs/{dpo_job.id}")
    page.locator("figure.chart canvas").nth(2).wait_for()  # its three charts, one under another
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(SCREENSHOTS / "job-dpo-phone.png"), full_page=True)
    page.goto(tiny_server.base_url.removesuffix("/v1") + f"/#/jobs/{finished_job.id}")
    page.locator("figure.chart canvas").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    # By keyboard: a page starts with the focus on its content; Tab walks its controls.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Copy name"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Try in playground"
    page.keyboard.press("Enter")
    page.wait_for_url("**/#/playground?model=*")
    page.locator("section.panel").nth(1).wait_for()


def test_a_hub_model_not_here_yet_is_named_by_id_and_its_job_says_why_it_failed(page, start_server, tiny_model_dir,
                                                                                forbidding_hub):
    """A Hugging Face id typed as the model: the file's check says the job downloads it first
    (not an error: Create stays open); here the hub answers 403 (a proxy blocks it), and the job's
    page shows the failure naming the model."""
    server = start_server(base_models=(tiny_model_dir,), env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": forbidding_hub})
    sign_in(page, server)
    page.get_by_role("link", name="New job").first.click()
    options = page.locator("#model-options option")
    options.first.wait_for(state="attached")
    assert TINY_MODEL in [options.nth(i).get_attribute("value") for i in range(options.count())]
    choose_model(page, "tunery-test/not-here-yet")
    page.get_by_label("Training file: a JSONL file from this computer").set_input_files(
        files={"name": "marv.jsonl", "mimeType": "application/jsonl", "buffer": MARV})
    page.get_by_role("status").filter(has_text="is not on this server yet: a job from it downloads it first").wait_for()
    create = page.get_by_role("button", name="Create job")
    assert create.is_enabled()
    page.screenshot(path=str(SCREENSHOTS / "create-hub-model.png"), full_page=True)
    create.click()
    page.wait_for_url("**/#/jobs/ftjob-*")
    page.locator(".title-row .badge", has_text="failed").wait_for(timeout=60_000)
    page.get_by_text("'tunery-test/not-here-yet' could not be downloaded from the Hugging Face hub").first.wait_for()
    assert not page.locator("section.charts").is_visible()  # it never trained: no empty charts
    page.screenshot(path=str(SCREENSHOTS / "job-hub-download-failed.png"), full_page=True)
