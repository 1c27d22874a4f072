"""The Prefect UI in a real browser, as a user works: open the stego-pipeline deployment's Run page in headless
Chromium, choose the CamVid quick preset in the form's dropdown, submit, and find the run's scores and its
MLflow link on the flow-run page once a worker has run it. Screenshots go to bench/results/ (linked from the
README): ``ui_run_form.png``, ``ui_run_artifacts.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the dev extras); skipped
with the reason where one is missing. The services are real and local (127.0.0.1): the session's Prefect
server with the deployments registered and its workers, and an MLflow server.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import pytest

from tests_helpers import flow_run_artifacts, tiny_overrides, wait_final

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e .[dev])"
    for what, path, package in (("Chromium", CHROMIUM, "chromium"), ("chromedriver", CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"no {what} at {path} (apt-get install {package})"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1500",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, what: str, timeout_s: float = 60):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(condition)
    except TimeoutException:
        raise AssertionError(f"{what}: not shown after {timeout_s} s on {driver.current_url}\n"
                             f"{driver.find_element('tag name', 'body').text[-2000:]}") from None


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def property_field(driver, label: str):
    """The form's field (``.schema-form-property``) whose label starts with ``label``."""
    from selenium.webdriver.common.by import By

    xpath = (f"//div[contains(@class,'schema-form-property ') and .//span[@class='schema-form-property__label' and "
             f"starts-with(normalize-space(.), '{label}')]]")
    return wait_for(driver, lambda d: d.find_element(By.XPATH, xpath), f"the form field {label!r}")


def test_a_user_starts_the_camvid_quick_preset_from_the_run_form_and_sees_its_scores(
        cluster, client, mlflow_server, browser) -> None:
    from prefect.client.schemas.actions import DeploymentUpdate
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    started = time.monotonic()
    deployment = client.read_deployment_by_name("stego_pipeline/stego-pipeline")
    # What a deployment's owner puts in prefect.yaml (`parameters:`): defaults the form opens with. Here a tiny run
    # (4 training images, random weights) tracked on the MLflow server; the user only chooses the preset.
    client.update_deployment(deployment.id, DeploymentUpdate(parameters={
        "overrides": tiny_overrides("embed.pretrained=false"), "tracking_uri": mlflow_server, "experiment": "ui-e2e"}))
    base = f"http://127.0.0.1:{cluster.port}"
    browser.get(f"{base}/deployments/deployment/{deployment.id}/run")

    preset = property_field(browser, "preset").find_element(By.CSS_SELECTOR, "select.p-native-select__control")
    choices = Select(preset)
    assert [o.get_attribute("value") for o in choices.options][:2] == ["camvid-dinov2s14", "camvid-quick"]
    assert choices.first_selected_option.get_attribute("value") == "camvid-dinov2s14"  # Run as is: CamVid
    choices.select_by_value("camvid-quick")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", preset)
    browser.save_screenshot(str(RESULTS / "ui_run_form.png"))
    submit = browser.find_element(By.XPATH, "//button[normalize-space(.)='Submit']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
    submit.click()

    wait_for(browser, lambda d: "/runs/flow-run/" in d.current_url, "the new flow run's page")
    flow_run_id = browser.current_url.split("/runs/flow-run/")[1].split("?")[0].split("/")[0]
    run = wait_final(client, flow_run_id, cluster, timeout_s=240)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{cluster.logs_tail()}"
    assert run.parameters["preset"] == "camvid-quick" and run.work_pool_name == "gpu"
    result = run.state.result()
    assert result["config"]["preset"] == "camvid-quick" and result["config"]["train"]["steps"] == 12

    browser.get(f"{base}/runs/flow-run/{flow_run_id}?tab=Artifacts")
    wait_for(browser, lambda d: "camvid-quick-metrics" in page_text(d), "the metrics artifact")
    shown = page_text(browser)
    assert {"camvid-quick-metrics", "camvid-quick-summary", "camvid-quick-overlays"} <= set(shown.split()), shown[-1500:]
    # The table itself, as the artifact's page renders it: one row per method with its scores.
    ours = flow_run_artifacts(flow_run_id)
    browser.get(f"{base}/artifacts/artifact/{ours['camvid-quick-metrics'].id}")
    best = max(result["metrics"], key=lambda m: result["metrics"][m]["mIoU"])
    wait_for(browser, lambda d: best in page_text(d), "the metrics table's rows")
    assert f"{round(100 * result['metrics'][best]['mIoU'], 2)}" in page_text(browser)
    browser.get(f"{base}/artifacts/artifact/{ours['camvid-quick-summary'].id}")
    link = wait_for(browser, lambda d: d.find_element(By.PARTIAL_LINK_TEXT, result["mlflow_run_id"]), "the MLflow link")
    assert link.get_attribute("href").startswith(f"{mlflow_server}/#/experiments/")
    browser.get(f"{base}/runs/flow-run/{flow_run_id}?tab=Artifacts")
    wait_for(browser, lambda d: "camvid-quick-metrics" in page_text(d), "the metrics artifact")
    browser.save_screenshot(str(RESULTS / "ui_run_artifacts.png"))
    print(f"\nUI test: {time.monotonic() - started:.0f} s from opening the form to the artifacts")
