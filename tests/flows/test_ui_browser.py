"""The Prefect UI in a real browser, as a user works: open the stego-pipeline deployment's Run page in headless
Chromium, choose the CamVid quick preset in the form's dropdown, submit, and find the run's scores and its
MLflow link on the flow-run page once a worker has run it. Screenshots (``ui_run_form.png``,
``ui_run_artifacts.png``, ...) go to a temporary folder, or to ``$STEGO_SCREENSHOTS`` when it is set:
``STEGO_SCREENSHOTS=bench/results`` refreshes the ones the README links to (a plain test run leaves the
checkout untouched).

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the dev extras); skipped
with the reason where one is missing. The services are real and local (127.0.0.1): the session's Prefect
server with the deployments registered and its workers, and an MLflow server.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests_helpers import flow_run_artifacts, tiny_overrides, wait_final

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
RESULTS = Path(os.environ.get("STEGO_SCREENSHOTS") or tempfile.mkdtemp(prefix="stego-screenshots-"))
RESULTS.mkdir(parents=True, exist_ok=True)


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

    xpath = (f"(//div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ') and "
             f".//span[@class='schema-form-property__label' and starts-with(normalize-space(.), '{label} ')]])[last()]")
    return wait_for(driver, lambda d: d.find_element(By.XPATH, xpath), f"the form field {label!r}")


def open_artifacts_tab(driver, run_page: str, keys: set[str]) -> None:
    """The flow run's page, its Artifacts tab clicked, once every card in ``keys`` is shown."""
    from selenium.webdriver.common.by import By

    driver.get(run_page)
    tab = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "ul[role='tablist'] li#artifacts"), "the Artifacts tab")
    tab.click()
    wait_for(driver, lambda d: keys <= set(page_text(d).split("\n")), f"the artifacts {sorted(keys)}")


def open_card(driver, key: str) -> None:
    """Click the artifact card titled ``key`` (to the artifact's own page)."""
    from selenium.webdriver.common.by import By

    card = driver.find_element(By.XPATH, f"//div[@class='artifact-card__title' and normalize-space(.)='{key}']/ancestor::a[1]")
    card.click()
    wait_for(driver, lambda d: "/artifacts/artifact/" in d.current_url, f"the page of {key}")


def on_form(driver) -> bool:
    return driver.current_url.split("?")[0].endswith("/run")


def submit_form(driver, tries: int = 3) -> None:
    """Press Submit, and again (as a user would) while the UI says the request failed: Prefect's SQLite database
    answers "database is locked" now and then on a loaded machine, and the UI then shows "Something went wrong"."""
    from selenium.webdriver.common.by import By

    for attempt in range(tries):
        submit = driver.find_element(By.XPATH, "//button[normalize-space(.)='Submit']")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
        submit.click()
        try:
            wait_for(driver, lambda d: not on_form(d) or "Something went wrong" in page_text(d), "the answer to Submit")
        except AssertionError:
            if attempt == tries - 1:
                raise
        if not on_form(driver):
            return
        for close in driver.find_elements(By.XPATH, "//button[normalize-space(.)='Close']"):
            driver.execute_script("arguments[0].click()", close)
        time.sleep(2)
    raise AssertionError(f"Submit failed {tries} times on {driver.current_url}")


def shown_number(x: float) -> str:
    """A percentage as the table shows it: rounded to 2 places, JavaScript's shortest form (12.5, 12)."""
    return f"{round(x, 2):g}" if abs(x) >= 1e-4 else "0"


def test_a_user_starts_the_camvid_quick_preset_from_the_run_form_and_sees_its_scores(
        cluster, client, mlflow_server, browser) -> None:
    from mlflow import MlflowClient
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
    run_name = browser.find_element(By.CSS_SELECTOR, ".flow-run-name-input input").get_attribute("value")
    submit_form(browser)

    # The UI goes back to the deployment's page, where the new run is listed by its name: open it.
    link = wait_for(browser, lambda d: d.find_element(By.LINK_TEXT, run_name), f"the new flow run {run_name!r}")
    browser.execute_script("arguments[0].click()", link)
    wait_for(browser, lambda d: "/runs/flow-run/" in d.current_url, "the new flow run's page")
    flow_run_id = browser.current_url.split("/runs/flow-run/")[1].split("?")[0].split("/")[0]
    run = wait_final(client, flow_run_id, cluster, timeout_s=240)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{cluster.logs_tail()}"
    assert run.parameters["preset"] == "camvid-quick" and run.work_pool_name == "gpu"
    result = run.state.result()
    assert result["config"]["preset"] == "camvid-quick" and result["config"]["train"]["steps"] == 12

    keys = {"camvid-quick-metrics", "camvid-quick-summary", "camvid-quick-overlays"}
    open_artifacts_tab(browser, f"{base}/runs/flow-run/{flow_run_id}", keys)
    browser.save_screenshot(str(RESULTS / "ui_run_artifacts.png"))
    # The table, as its artifact page renders it: one row per method with its scores.
    open_card(browser, "camvid-quick-metrics")
    for method, m in result["metrics"].items():
        wait_for(browser, lambda d: method in page_text(d), f"the metrics table's row {method}")
        assert f"{method}\n{shown_number(100 * m['accuracy'])} {shown_number(100 * m['mIoU'])}" in page_text(browser)
    browser.save_screenshot(str(RESULTS / "ui_run_metrics.png"))
    # The summary links the MLflow run.
    open_artifacts_tab(browser, f"{base}/runs/flow-run/{flow_run_id}", keys)
    open_card(browser, "camvid-quick-summary")
    link = wait_for(browser, lambda d: d.find_element(By.PARTIAL_LINK_TEXT, result["mlflow_run_id"]), "the MLflow link")
    experiment = MlflowClient(tracking_uri=mlflow_server).get_experiment_by_name("ui-e2e").experiment_id
    assert link.get_attribute("href") == f"{mlflow_server}/#/experiments/{experiment}/runs/{result['mlflow_run_id']}"
    assert "camvid-quick" in page_text(browser) and "| knn |" not in page_text(browser)  # rendered, not raw markdown
    browser.save_screenshot(str(RESULTS / "ui_run_summary.png"))
    # The overlay figure, loaded by the browser from the MLflow server.
    open_artifacts_tab(browser, f"{base}/runs/flow-run/{flow_run_id}", keys)
    open_card(browser, "camvid-quick-overlays")
    image = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"img[src^='{mlflow_server}/get-artifact']"),
                     "the overlay image")
    wait_for(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image),
             "the overlay image's pixels")
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 200
    browser.save_screenshot(str(RESULTS / "ui_run_overlays.png"))
    print(f"\nUI test: {time.monotonic() - started:.0f} s from opening the form to the artifacts")


def test_mlflow_compares_two_runs_of_the_form_side_by_side(cluster, client, mlflow_server, browser) -> None:
    """Two runs differing in one field (the second from the API, as the UI's Run button posts it; its stages
    above the CRF come from the cache) on MLflow's Compare page: the differing parameter and both scores."""
    from urllib.parse import quote

    from mlflow import MlflowClient
    from selenium.webdriver.common.by import By

    mlflow = MlflowClient(tracking_uri=mlflow_server)
    deployment = client.read_deployment_by_name("stego_pipeline/stego-pipeline")
    for iterations in (1, 2):
        experiment = mlflow.get_experiment_by_name("ui-e2e")
        runs = mlflow.search_runs([experiment.experiment_id]) if experiment else []
        if len(runs) >= 2:
            break
        run = client.create_flow_run_from_deployment(deployment.id, parameters={
            "preset": "camvid-quick", "overrides": tiny_overrides("embed.pretrained=false", f"crf.iterations={iterations}"),
            "tracking_uri": mlflow_server, "experiment": "ui-e2e"})
        run = wait_final(client, run, cluster, timeout_s=240)
        assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{cluster.logs_tail()}"
    experiment = mlflow.get_experiment_by_name("ui-e2e")
    first, second = mlflow.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])[:2]
    ids = [first.info.run_id, second.info.run_id]
    browser.get(f"{mlflow_server}/#/compare-runs?runs={quote(json.dumps(ids))}"
                f"&experiments={quote(json.dumps([experiment.experiment_id]))}")  # MLflow's own Compare link
    wait_for(browser, lambda d: "Run details" in page_text(d) and "crf.iterations" in page_text(d),
             "the compared runs", timeout_s=90)
    browser.find_element(By.XPATH, "(//label[normalize-space(.)='Show diff only'])[1]").click()  # parameters: the diff
    shown = page_text(browser)
    diff = "\ncrf.iterations " + " ".join(r.data.params["crf.iterations"] for r in (first, second)) + "\n"
    for run in (first, second):
        assert run.info.run_name in shown, shown[-1500:]
    assert diff in shown, shown[shown.find("Parameters"):][:1500]  # the one parameter the runs differ in
    browser.save_screenshot(str(RESULTS / "mlflow_compare.png"))
