"""The web page at / in a real headless Chromium (Debian's chromium, driven by playwright): enrol three
people from their photos, identify a 16 px crop, read the top matches and the camera's state, and check a
screenshot of the result is a rendered page, not a blank one (saved under pytest's tmp dir)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serving import live_server
from students import lr_crop

pytestmark = pytest.mark.data


def chromium() -> str:
    for candidate in (os.environ.get("AIRD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no chromium found (/usr/bin/chromium; apt-get install chromium, or set AIRD_CHROMIUM)")


def test_enrol_and_identify_in_a_browser(tmp_path, serve_recognizer, data_root, orl_chips):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs playwright: pip install playwright"
    )
    executable = chromium()
    from aird.serve import ServeSettings, create_app

    probe = tmp_path / "gate-2_0815.png"
    Image.fromarray(lr_crop(orl_chips["s2"][3], 16, "s2-3")).save(probe)  # s2's 4th photo, as a 16 px crop
    app = create_app(ServeSettings(data_dir=tmp_path / "data"), serve_recognizer)
    with live_server(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('test-student')")
            assert not page.is_visible("#key-row")  # the server runs without keys: no key to ask for
            page.fill("#gallery", "orl")
            page.dispatch_event("#gallery", "change")
            for name in ("s1", "s2", "s3"):
                page.fill("#person", name)
                page.set_input_files("#enrol-files", str(data_root / "orl" / name / "1.pgm"))
                page.click("#enrol")
                page.wait_for_function(
                    f"document.getElementById('enrol-status').textContent.startsWith('Enrolled {name}: 1 face')"
                )
            page.wait_for_function("document.querySelectorAll('#people li').length === 3")
            assert [t.split()[0] for t in page.locator("#people li").all_inner_texts()] == ["s1", "s2", "s3"]

            page.set_input_files("#probe", str(probe))
            assert page.is_checked("#cropped")  # a probe is a detector's crop unless said otherwise
            page.fill("#camera", "gate-2")
            page.click("#identify")
            page.wait_for_selector("#results .face")
            assert page.inner_text("#identify-status") == "Match: s2"
            face = page.locator("#results .face").first
            assert "status-match" in face.get_attribute("class")
            assert "s2 (0.9" in face.locator("h3").inner_text()
            names = [c.split("\n")[0].strip() for c in face.locator(".cand").all_inner_texts()]
            assert names[0] == "s2" and sorted(names) == ["s1", "s2", "s3"]
            assert "gate-2_0815.png: 16 px face, LR route, camera gate-2" in face.inner_text()
            state = page.inner_text("#camera-state")
            assert "faces seen\n1" in state.replace("\t", "\n") and "adapter" in state
            assert page.inner_text("#camera-name") == "gate-2"

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[1] == 1280 and pixels.shape[0] >= 600
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert pixels.std() > 10 and colours > 50, (pixels.std(), colours)  # text, bars and the probe drawn, not blank
