"""Frames per second of the live panel's painter in headless Chromium, beside Python, in one run.

The browser runs exactly what the site ships: the panel's worker (``assets/live-worker.js``),
onnxruntime-web's WASM build from ``node_modules`` and the transformer file with free height
and width (``covergen.site.live``), painting square frames of 256 and 512 pixels with a
cover's style vector, one frame at a time as the panel does (RGBA bytes in, RGBA bytes out,
so the conversions are counted). Twice: from a plain server (one thread) and from a cross-
origin isolated one (``covergen serve``'s headers: WASM threads, one a core). Beside it, on the same
machine and in the same run, the same network in Python: our torch module (``method:
arbitrary``'s float path) and onnxruntime on the very file the browser loads.

    .venv/bin/python scripts/bench_live.py [--sizes 256 512] [--seconds 3]

Prints a table of frames per second and the ratios browser / torch. Needs /usr/bin/chromium
and ``npm ci`` (make install).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from covergen.serve import CONTENT_TYPES, ISOLATION_HEADERS  # noqa: E402
from covergen.site.live import default_runtime_dirs, prepare_live  # noqa: E402
from covergen.site.theme import THEME_DIR  # noqa: E402
from covergen.stylevectors import style_vectors  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
COVER = REPO / "samples" / "covers" / "redlines.png"

BROWSER_BENCH = """async ([config, sizes, seconds, threads]) => {
  const worker = new Worker(config.worker, {type: 'module'});
  let next = 1; const waiting = new Map();
  worker.onmessage = (e) => { const w = waiting.get(e.data.id); waiting.delete(e.data.id);
    e.data.type === 'error' ? w.reject(new Error(e.data.message)) : w.resolve(e.data); };
  const ask = (m, t) => new Promise((resolve, reject) => {
    m.id = next++; waiting.set(m.id, {resolve, reject}); worker.postMessage(m, t || []); });
  const started = performance.now();
  const info = await ask({type: 'init', config, prefer: 'wasm', threads});
  const result = {backend: info.backend, threads: info.threads, isolated: crossOriginIsolated,
                  start_ms: performance.now() - started, fps: {}};
  const vector = Float32Array.from(config.vector);
  for (const size of sizes) {
    const frame = () => { const p = new Uint8ClampedArray(size * size * 4);
      for (let i = 0; i < p.length; i++) p[i] = (i * 2654435761) >>> 24; return p; };
    const paint = () => { const p = frame();
      return ask({type: 'paint', pixels: p, width: size, height: size, vector}, [p.buffer]); };
    await paint();  // warm-up
    let frames = 0; const t0 = performance.now();
    while (frames < 5 || performance.now() - t0 < seconds * 1000) { await paint(); frames++; }
    result.fps[size] = frames * 1000 / (performance.now() - t0);
  }
  worker.terminate();
  return result;
}"""


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **CONTENT_TYPES}  # noqa: RUF012
    isolated = False

    def end_headers(self) -> None:
        if self.isolated:
            for name, value in ISOLATION_HEADERS.items():
                self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def prepare(folder: Path, cache: Path) -> dict:
    """The panel's files in ``folder`` as the site lays them out; the page's config."""
    sha = hashlib.sha256(COVER.read_bytes()).hexdigest()
    vectors = style_vectors({sha: COVER}, cache)
    live = prepare_live(vectors, cache / "derived", default_runtime_dirs(REPO))
    if not live.available:
        sys.exit(f"cannot benchmark: {live.problem}")
    for file in live.files.values():
        (folder / file.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.source, folder / file.path)
    (folder / "assets").mkdir(exist_ok=True)
    shutil.copyfile(THEME_DIR / "assets" / "live-worker.js", folder / "assets" / "live-worker.js")
    (folder / "index.html").write_text("<!doctype html><title>bench</title>\n")
    assets = {"live.js": "assets/live.js", "live-worker.js": "assets/live-worker.js"}
    return live.config("", assets, live.vectors[sha], "bench")


def browser_fps(folder: Path, config: dict, sizes: list[int], seconds: float, isolated: bool):
    from playwright.sync_api import sync_playwright

    handler = type("H", (Handler,), {"isolated": isolated})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    absolute = json.loads(json.dumps(config))
    for backend in absolute["runtime"].values():
        for part in backend:
            backend[part] = base + backend[part]
    for key in ("transformer", "predictor", "worker"):
        absolute[key] = base + absolute[key]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            page.goto(base + "index.html")
            threads = os.cpu_count() if isolated else 1
            result = page.evaluate(BROWSER_BENCH, [absolute, sizes, seconds, threads])
            browser.close()
        result["fps"] = {int(size): fps for size, fps in result["fps"].items()}
    finally:
        server.shutdown()
        server.server_close()
    return result


def python_fps(network: Path, vector: list[float], sizes: list[int], seconds: float):
    import numpy as np
    import onnxruntime
    import torch

    from covergen.nst import feedforward

    transformer = feedforward.load_transformer()
    style = torch.tensor(vector, dtype=torch.float32)[None]
    session = onnxruntime.InferenceSession(str(network), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {"torch": {}, "torch1": {}, "onnxruntime": {}}
    threads = torch.get_num_threads()

    def rate(step) -> float:  # type: ignore[no-untyped-def]
        step()
        frames, start = 0, time.perf_counter()
        while frames < 5 or time.perf_counter() - start < seconds:
            step()
            frames += 1
        return frames / (time.perf_counter() - start)

    for size in sizes:
        pixels = rng.random((1, size, size, 3), dtype=np.float32)
        content = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            out["torch"][size] = rate(lambda c=content: transformer(c, style))
            torch.set_num_threads(1)  # like for like with one WASM thread
            out["torch1"][size] = rate(lambda c=content: transformer(c, style))
            torch.set_num_threads(threads)
        feeds = {names[0]: pixels, names[1]: np.asarray(vector, np.float32).reshape(1, 1, 1, 100)}
        out["onnxruntime"][size] = rate(lambda f=feeds: session.run(None, f))
    return out, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"bench_live: skipped, no browser at {CHROMIUM} (apt-get install chromium)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-live-") as temp:
        folder, cache = Path(temp) / "site", Path(temp) / "cache"
        folder.mkdir()
        config = prepare(folder, cache)
        network = folder / config["transformer"]
        single = browser_fps(folder, config, args.sizes, args.seconds, isolated=False)
        threaded = browser_fps(folder, config, args.sizes, args.seconds, isolated=True)
        python, torch_threads = python_fps(network, config["vector"], args.sizes, args.seconds)
    cores = os.cpu_count()
    print(f"live painter, square frames, {cores} cores; frames per second (higher is better)")
    print(f"browser start-up (runtime + network, from a local server): "
          f"{single['start_ms']:.0f} ms; {threaded['start_ms']:.0f} ms isolated")  # fmt: skip
    columns = [
        (f"Chromium WASM {single['threads']} thread", single["fps"]),
        (f"Chromium WASM {threaded['threads']} threads (isolated)", threaded["fps"]),
        (f"torch ({torch_threads} threads)", python["torch"]),
        ("torch (1 thread)", python["torch1"]),
        ("onnxruntime Python (same file)", python["onnxruntime"]),
    ]
    width = max(len(name) for name, _ in columns)
    print(f"{'':{width}}  " + "  ".join(f"{s:>4} px " for s in args.sizes))
    for name, fps in columns:
        print(f"{name:{width}}  " + "  ".join(f"{fps[s]:7.1f}" for s in args.sizes))
    for label, base in (
        (f"torch, {torch_threads} threads", python["torch"]),
        ("torch, 1 thread", python["torch1"]),
    ):
        print(f"ratios browser / {label}:")
        for name, fps in columns[:2]:
            ratios = [fps[s] / base[s] for s in args.sizes]
            print(f"  {name:{width}}  " + "  ".join(f"{r:6.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
