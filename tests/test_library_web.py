"""`vsr1 web`: the API (search, thumbnails, range requests, what /media refuses) and the page in a real
headless Chromium (selenium + the system chromium/chromedriver; skipped cleanly when absent)."""
import os
import shutil
import socket
import threading
import time
from io import BytesIO
from pathlib import Path

import pytest

import _world
from videosearch_r1 import cli


@pytest.fixture(scope="module")
def web_lib(tmp_path_factory):
    """A two-video library (one video > 64 s, so its moments start well after 0)."""
    w = _world.world()
    folder = tmp_path_factory.mktemp("webvideos")
    vids = sorted((w.workspace / "data" / "synth" / "raw" / "videos").glob("s0-test*.mp4"))
    long = [p for p in vids if p.stat().st_size == max(q.stat().st_size for q in vids)][0]
    for p in {vids[0], long}:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not a video")
    os.symlink("/etc/hostname", folder / "escape.mp4")
    store_dir = tmp_path_factory.mktemp("webstore")
    overrides = [f"workspace={w.workspace}", f"library.store=faiss+sqlite://{store_dir}"]
    assert cli.main(["library", "add", str(folder), *overrides]) == 0
    return folder, overrides


@pytest.fixture(scope="module")
def app(web_lib):
    from videosearch_r1.config import load_config
    from videosearch_r1.library.web import create_app

    return create_app(load_config(None, web_lib[1]))


def test_api(app, web_lib):
    from fastapi.testclient import TestClient
    from PIL import Image

    folder, _ = web_lib
    c = TestClient(app)
    assert c.get("/").status_code == 200 and 'id="search-form"' in c.get("/").text
    st = c.get("/api/status").json()
    assert st["files"] == 2 and st["roots"] == [str(folder.resolve())]
    assert c.get("/api/search", params={"q": "  "}).status_code == 400
    assert c.get("/api/search").status_code == 422
    assert c.get("/api/search", params={"q": "x", "k": -1}).status_code == 422
    res = c.get("/api/search", params={"q": "A small red circle jumps", "k": 4}).json()["results"]
    assert len(res) == 4 and all(r["thumb"] == f"/api/thumb/{r['id']}" for r in res)
    t = c.get(res[0]["thumb"])
    assert t.headers["content-type"] == "image/jpeg" and Image.open(BytesIO(t.content)).size[0] > 0
    assert c.get("/api/thumb/abc").status_code == 422 and c.get("/api/thumb/12345").status_code == 404
    # range requests on a library file (the player seeks with them)
    f = res[0]["file"]
    r = c.get("/media", params={"path": f}, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == Path(f).read_bytes()[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{Path(f).stat().st_size}"
    assert c.get("/media", params={"path": f}).headers["content-type"] == "video/mp4"
    # only library files inside library folders
    for bad in (f"{folder}/../../../etc/passwd", "/etc/passwd", str(folder / "notes.txt"), str(folder / "escape.mp4")):
        assert c.get("/media", params={"path": bad}).status_code == 403, bad
    assert c.get("/media", params={"path": "relative.mp4"}).status_code == 400
    assert c.get("/media").status_code == 422


def _chromium() -> tuple[str, str] | None:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _serve(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(200):
        if server.started:
            return server, port
        time.sleep(0.05)
    raise RuntimeError("uvicorn did not start")


def drive_page(app, shot: Path | None = None) -> dict:
    """Type a query, wait for results, click a moment that starts after 0 s; report what the page did."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = _chromium()
    server, port = _serve(app)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800",
              "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(driver_path))
    try:
        d.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(d, 30)
        wait.until(lambda d: "videos" in d.find_element(By.ID, "status").text)
        d.find_element(By.ID, "q").send_keys("A small red circle jumps in front of a blue wall")
        d.find_element(By.ID, "go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) > 0)
        hits = d.find_elements(By.CSS_SELECTOR, ".hit")
        target = next(h for h in hits if float(h.get_attribute("data-start")) > 0)
        start = float(target.get_attribute("data-start"))
        target.click()
        wait.until(lambda d: d.execute_script("const v = document.getElementById('player');"
                                              "return v.readyState >= 1 && !v.seeking && v.currentTime > 0;"))
        t = d.execute_script("return document.getElementById('player').currentTime;")
        status = d.find_element(By.ID, "status").text
        if shot is not None:
            time.sleep(0.5)
            d.save_screenshot(str(shot))
        return {"hits": len(hits), "start": start, "current_time": t, "status": status,
                "now": d.find_element(By.ID, "now").text}
    finally:
        d.quit()
        server.should_exit = True


def test_page_in_headless_chromium(app, tmp_path):
    if _chromium() is None:
        pytest.skip("no chromium + chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")
    got = drive_page(app, tmp_path / "page.png")
    assert got["hits"] == 10 and "2 videos" in got["status"]
    # the player seeked to the moment's start (it may have played on a little since)
    assert got["start"] - 0.3 <= got["current_time"] <= got["start"] + 8.0, got
    assert (tmp_path / "page.png").stat().st_size > 1000
