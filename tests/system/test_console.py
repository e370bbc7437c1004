"""The web console in a real browser (Debian's Chromium, driven by Selenium) against the real
server: submit, watch, read, download, delete, auth, and user data shown as text."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

import testdata
from chorus_server import ChorusServer, words

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DIARIZED = {"type": "transcription", "transcription_config": {"language": "en", "diarization": "speaker"}}
EN = {"type": "transcription", "transcription_config": {"language": "en"}}
# Screenshots go beside the test's files, and also here when set (the README's come from it).
SHOTS = os.environ.get("CHORUS_SCREENSHOTS")


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


@pytest.fixture(scope="module")
def console_server(tmp_path_factory, corpus):
    """One engine, so a second job finds the worker full."""
    server = ChorusServer(tmp_path_factory.mktemp("console") / "jobs", parallel=1)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,800", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    driver.shots = tmp_path
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except StaleElementReferenceException:  # the page redrew it meanwhile
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def row(driver, job_id: str):
    found = driver.find_elements(By.CSS_SELECTOR, f'{tid("job-row")}[data-job-id="{job_id}"]')
    return found[0] if found else None


def status_of(driver, job_id: str) -> str | None:
    found = row(driver, job_id)
    return found.get_attribute("data-status") if found else None


def submit(driver, audio: Path, diarization: str = "none") -> None:
    driver.find_element(By.CSS_SELECTOR, tid("upload-file")).send_keys(str(audio))
    Select(driver.find_element(By.ID, "diarization")).select_by_value(diarization)
    driver.find_element(By.CSS_SELECTOR, tid("submit-job")).click()


def newest_job(server: ChorusServer, before: set[str]) -> str:
    return wait_for(lambda: next((j["id"] for j in server.http.get("/v2/jobs").json()["jobs"]
                                  if j["id"] not in before), None), 30, "the new job")


def job_ids(server: ChorusServer) -> set[str]:
    return {j["id"] for j in server.http.get("/v2/jobs").json()["jobs"]}


def severe_logs(driver, allowed: tuple[str, ...] = ()) -> list[str]:
    """Console errors: JavaScript ones, and any network failure but the expected ones."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(driver.shots / name))
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(driver.shots / name, Path(SHOTS) / name)


def test_submit_a_diarized_call_watch_it_and_read_words_and_speakers(console_server, browser):
    server = console_server
    server.wait_idle()
    browser.get(server.url + "/")
    wait_for(lambda: "engines in use: 0 of 1" in browser.find_element(By.CSS_SELECTOR, tid("capacity")).text,
             what="the capacity")
    audio, _ = testdata.pyannote_sample()
    before = job_ids(server)
    submit(browser, audio, "speaker")
    job_id = newest_job(server, before)
    wait_for(lambda: status_of(browser, job_id) == "running", what="the running row")
    running = row(browser, job_id)
    assert running.find_element(By.CSS_SELECTOR, tid("job-status")).text == "running"
    assert running.find_elements(By.CSS_SELECTOR, tid("job-progress"))
    def progressed() -> bool:
        bars = row(browser, job_id).find_elements(By.CSS_SELECTOR, tid("job-progress"))
        return status_of(browser, job_id) == "done" or (bars and float(bars[0].get_attribute("value") or 0) > 0)

    wait_for(progressed, 120, "progress")
    shot(browser, "console-running.png")
    wait_for(lambda: status_of(browser, job_id) == "done", 240, "the job to finish")
    assert not row(browser, job_id).find_elements(By.CSS_SELECTOR, tid("job-progress"))

    # The job opens: words with their speakers, as the API has them.
    spans = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'{tid("transcript")} [data-speaker]'),
                     what="the transcript")
    api = server.http.get(f"/v2/jobs/{job_id}/transcript").json()
    api_words = [r for r in api["results"] if r["type"] == "word"]
    assert [s.text for s in spans] == words(api)
    assert [s.get_attribute("data-speaker") for s in spans] == [r["alternatives"][0]["speaker"] for r in api_words]
    assert len({s.get_attribute("data-speaker") for s in spans}) >= 2
    timeline = browser.find_element(By.CSS_SELECTOR, tid("speaker-timeline"))
    assert len(timeline.find_elements(By.CSS_SELECTOR, ".row")) == len({s.get_attribute("data-speaker") for s in spans})
    assert timeline.find_elements(By.CSS_SELECTOR, ".turn")
    assert "received job" in browser.execute_script("return document.getElementById('log').textContent")
    for fmt, query in (("json", "json-v2"), ("txt", "txt"), ("srt", "srt")):
        href = browser.find_element(By.CSS_SELECTOR, tid(f"download-{fmt}")).get_attribute("href")
        assert href == f"{server.url}/v2/jobs/{job_id}/transcript?format={query}"
    browser.execute_script("document.getElementById('job-panel').scrollIntoView()")
    shot(browser, "console-transcript.png")

    # The SRT downloads, and is the API's.
    browser.find_element(By.CSS_SELECTOR, tid("download-srt")).click()
    srt = wait_for(lambda: next((p for p in browser.downloads.glob("*.srt")), None), 30, "the SRT download")
    assert wait_for(lambda: srt.read_bytes()) == server.http.get(f"/v2/jobs/{job_id}/transcript",
                                                                 params={"format": "srt"}).content
    assert severe_logs(browser) == []


def test_a_full_worker_shows_the_503_detail_and_a_running_job_can_be_force_deleted(
        console_server, browser, long_speech, speech):
    server = console_server
    server.wait_idle()
    browser.get(server.url + "/")
    long_audio = testdata.write_wav(
        __import__("numpy").concatenate([testdata.decode(long_speech[0])] * 3), long_speech[0].parent / "x3.wav")
    busy = server.submit(long_audio, EN).json()["id"]
    submit(browser, speech[0])
    error = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, tid("submit-error")).text, what="the error")
    assert error == "503: Server busy: 1 engines not available (1 engines in use, 1 parallel allowed)"
    wait_for(lambda: status_of(browser, busy) == "running", what="the busy job's row")
    row(browser, busy).find_element(By.CSS_SELECTOR, tid("delete-job")).click()
    wait_for(lambda: row(browser, busy) is None, 10, "the deleted job to leave the list")
    wait_for(lambda: server.http.get("/jobs").json()["unused_engines"] == 1, 5, "the engine to be free")
    assert server.http.get(f"/v2/jobs/{busy}").json()["job"]["status"] == "deleted"
    # The 503 is the answer shown; a poll in flight at the delete may meet the job gone (410).
    assert severe_logs(browser, allowed=("status of 503", "status of 410")) == []


def test_a_file_name_with_markup_shows_as_text(console_server, browser, speech, tmp_path):
    server = console_server
    server.wait_idle()
    # No "/" or "\\" in a file name (the server keeps only a base name): the tags stay open.
    name = "<script>window.pwned=1<script><img src=x onerror=window.pwned=2>.wav"
    audio = tmp_path / name
    shutil.copy(speech[0], audio)
    browser.get(server.url + "/")
    before = job_ids(server)
    submit(browser, audio)
    job_id = newest_job(server, before)
    wait_for(lambda: status_of(browser, job_id) == "done", 120, "the job to finish")
    assert row(browser, job_id).find_element(By.CSS_SELECTOR, "button.open").text == name
    assert browser.find_element(By.ID, "job-title").text == name
    assert browser.execute_script("return window.pwned") is None
    assert severe_logs(browser) == []


def test_every_control_is_labelled_and_the_page_fits_a_phone(console_server, browser):
    browser.get(console_server.url + "/")
    wait_for(lambda: "engines in use" in browser.find_element(By.CSS_SELECTOR, tid("capacity")).text)
    unlabelled = browser.execute_script("""
        return [...document.querySelectorAll('input, select')]
          .filter((e) => !document.querySelector(`label[for="${e.id}"]`)).map((e) => e.outerHTML);""")
    assert unlabelled == []
    browser.set_window_size(390, 844)
    time.sleep(0.3)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.find_element(By.CSS_SELECTOR, tid("submit-job")).is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, tid("upload-file")).is_displayed()
    # The keyboard reaches the controls in order, starting with the file input.
    browser.get(console_server.url + "/")
    order = []
    for _ in range(7):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        order.append(active.get_attribute("data-testid") or active.get_attribute("id"))
    assert order == ["upload-file", "language", "operating-point", "diarization", "engines", "user-id", "submit-job"]
    assert severe_logs(browser) == []


def test_with_auth_on_nothing_without_the_key_and_everything_with_it(tmp_path, corpus, browser, speech):
    server = ChorusServer(tmp_path / "jobs", parallel=1, args=["--api-key", "s3cret", "--diarization-model", "none"])
    try:
        server.wait_ready()
        key = {"Authorization": "Bearer s3cret"}
        with open(speech[0], "rb") as f:
            job_id = server.http.post("/v2/jobs", headers=key, data={"config": '{"type": "transcription", '
                                      '"transcription_config": {"language": "en"}}'},
                                      files={"data_file": ("a.wav", f)}).json()["id"]
        browser.get(server.url + "/")
        field = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, tid("api-key")), what="the key field")
        assert field.is_displayed()
        time.sleep(2.5)  # a poll's worth: still nothing shown
        assert browser.find_elements(By.CSS_SELECTOR, tid("job-row")) == []
        field.send_keys("s3cret\n")
        wait_for(lambda: status_of(browser, job_id) == "done", 120, "the job with the key")
        assert browser.execute_script("return sessionStorage.getItem('chorus-api-key')") == "s3cret"
        assert not browser.find_element(By.ID, "auth").is_displayed()
        # A download with the key: the link is the API's URL, fetched with the bearer token.
        row(browser, job_id).find_element(By.CSS_SELECTOR, "button.open").click()
        link = wait_for(lambda: (lambda a: a if a.is_displayed() else None)(
            browser.find_element(By.CSS_SELECTOR, tid("download-txt"))), what="the txt link")
        assert link.get_attribute("href") == f"{server.url}/v2/jobs/{job_id}/transcript?format=txt"
        link.click()
        txt = wait_for(lambda: next(browser.downloads.glob("*.txt"), None), 30, "the txt download")
        assert wait_for(lambda: txt.read_bytes()) == server.http.get(
            f"/v2/jobs/{job_id}/transcript", params={"format": "txt"}, headers=key).content
        before = job_ids_with(server, key)
        submit(browser, speech[0])
        wait_for(lambda: job_ids_with(server, key) - before, 30, "a job submitted with the key")
        assert severe_logs(browser) == []
    finally:
        server.stop()


def job_ids_with(server: ChorusServer, headers: dict) -> set[str]:
    return {j["id"] for j in server.http.get("/v2/jobs", headers=headers).json()["jobs"]}


def test_a_two_hour_transcript_renders_without_blocking_the_page(console_server, browser):
    """A two-hour monologue (40,000 words, one speaker): added a batch per frame, no frame's work
    holds the page for long, and every word arrives."""
    browser.get(console_server.url + "/")
    wait_for(lambda: "engines in use" in browser.find_element(By.CSS_SELECTOR, tid("capacity")).text)
    browser.execute_script("""
        window.longTasks = [];
        new PerformanceObserver((list) => list.getEntries().forEach((e) => window.longTasks.push(e.duration)))
          .observe({type: "longtask"});
        const results = [];
        for (let i = 0; i < 40000; i++) {
          const t = i * 0.18;
          results.push({type: "word", start_time: t, end_time: t + 0.15,
                        alternatives: [{content: `w${i}`, confidence: 1, language: "en", speaker: "S1"}]});
          if (i % 12 === 11) results.push({type: "punctuation", start_time: t + 0.15, end_time: t + 0.15,
            attaches_to: "previous", is_eos: true, alternatives: [{content: ".", confidence: 1, language: "en",
            speaker: "S1"}]});
        }
        document.getElementById("job-panel").hidden = false;
        renderTranscript({results, metadata: {}, job: {duration: 7200}}, 7200);""")
    wait_for(lambda: browser.execute_script(
        "return document.querySelectorAll('[data-testid=transcript] [data-speaker]').length") == 40000,
        60, "every word")
    # A batch per frame keeps every task of the page short (measured here: under 200 ms each).
    longest = max(browser.execute_script("return window.longTasks") or [0])
    print(f"longest task while rendering: {longest:.0f} ms")
    assert longest < 1000
    assert len(browser.find_elements(By.CSS_SELECTOR, f'{tid("speaker-timeline")} .row')) == 1
    assert severe_logs(browser) == []
