/* covergen live panel: "Paint yourself". Loaded by site.js only when the visitor presses one
   of the panel's buttons; the painting itself runs in live-worker.js. Nothing leaves the
   device: frames go from the camera (or the chosen file) to a canvas, to the worker, and back.

   How the painting keeps up with the device: one frame is painted at a time (the next camera
   frame is taken when the last painting is back, so the frame rate is what the device can
   do, and never a queue), and the size painted follows the time a frame takes: the long side
   steps down when frames take over 140 ms (under ~7 fps) and up when they take under 50 ms,
   between 128 and 768 pixels. A chosen photo is painted at once at that size, then again
   at up to 1024 pixels for keeping. Nothing is painted while the page is hidden. */

const SIZES = [128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768];
const STILL_SIDE = 1024;  // a photo, or a camera frame being saved
const SLOW_MS = 140;
const FAST_MS = 50;
const OWN_EVERY_MS = 1000;  // the camera's own style vector, for strengths below 100 %
const PREDICTOR_SIDE = 256;

function absolute(url) { return new URL(url, document.baseURI).href; }

function absoluteConfig(config) {
  const runtime = {};
  Object.keys(config.runtime).forEach(function (name) {
    const files = config.runtime[name];
    runtime[name] = { module: absolute(files.module), mjs: absolute(files.mjs), wasm: absolute(files.wasm) };
  });
  return {
    runtime: runtime,
    transformer: absolute(config.transformer),
    predictor: absolute(config.predictor),
    inputs: config.inputs,
  };
}

/* The worker, as promises: one request at a time is all the panel ever sends. */
class Painter {
  constructor(config) {
    this.worker = new Worker(absolute(config.worker), { type: "module" });
    this.next = 1;
    this.waiting = new Map();
    this.worker.onmessage = (event) => {
      const reply = event.data;
      const pending = this.waiting.get(reply.id);
      if (!pending) { return; }
      this.waiting.delete(reply.id);
      if (reply.type === "error") { pending.reject(new Error(reply.message)); } else { pending.resolve(reply); }
    };
    this.worker.onerror = (event) => {
      const error = new Error(event.message || "the painter stopped");
      this.waiting.forEach(function (pending) { pending.reject(error); });
      this.waiting.clear();
    };
    const params = new URLSearchParams(window.location.search);
    this.ready = this.ask({ type: "init", config: absoluteConfig(config), prefer: params.get("backend") || "" });
  }

  ask(message, transfer) {
    const id = this.next++;
    message.id = id;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve, reject: reject });
      this.worker.postMessage(message, transfer || []);
    });
  }

  paint(frame, vector) {
    return this.ask({ type: "paint", pixels: frame.data, width: frame.width, height: frame.height,
      vector: vector }, [frame.data.buffer]);
  }

  own(frame) {
    return this.ask({ type: "own", pixels: frame.data }, [frame.data.buffer]).then(function (r) { return r.vector; });
  }
}

let workCanvas = null;  // reused for every frame: a canvas a frame would churn memory

/* A source's pixels at a size whose sides are multiples of 4, long side at most `side`. */
function grab(source, width, height, side, multiple) {
  const scale = Math.min(1, side / Math.max(width, height));
  const w = Math.max(multiple * 2, Math.round((width * scale) / multiple) * multiple);
  const h = Math.max(multiple * 2, Math.round((height * scale) / multiple) * multiple);
  const canvas = workCanvas || (workCanvas = document.createElement("canvas"));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(source, 0, 0, w, h);
  return context.getImageData(0, 0, w, h);
}

/* The centre square at the predictor's 256 x 256, as the build reads a cover. */
function grabSquare(source, width, height) {
  const side = Math.min(width, height);
  const canvas = document.createElement("canvas");
  canvas.width = PREDICTOR_SIDE;
  canvas.height = PREDICTOR_SIDE;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(source, (width - side) / 2, (height - side) / 2, side, side,
    0, 0, PREDICTOR_SIDE, PREDICTOR_SIDE);
  return context.getImageData(0, 0, PREDICTOR_SIDE, PREDICTOR_SIDE);
}

function nextFrame() {
  return new Promise(function (resolve) { window.requestAnimationFrame(function () { resolve(); }); });
}

function whenVisible() {
  if (!document.hidden) { return Promise.resolve(); }
  return new Promise(function (resolve) {
    function check() {
      if (!document.hidden) { document.removeEventListener("visibilitychange", check); resolve(); }
    }
    document.addEventListener("visibilitychange", check);
  });
}

function cameraMessage(error) {
  const name = error && error.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "The camera was not allowed. You can still choose a photo.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "NotReadableError") {
    return "No camera could be started on this device. You can still choose a photo.";
  }
  return "The camera could not be started. You can still choose a photo.";
}

export class LivePanel {
  constructor(section, config) {
    this.section = section;
    this.config = config;
    this.part = function (name) { return section.querySelector("[data-live-" + name + "]"); };
    this.status = this.part("status");
    this.details = this.part("details");
    this.stage = this.part("stage");
    this.canvas = this.part("canvas");
    this.cameraButton = this.part("camera");
    this.saveButton = this.part("save");
    this.strengthInput = this.part("strength");
    this.strengthOutput = this.part("strength-value");
    this.painter = null;
    this.source = null;  // {kind: "camera", video, stream} or {kind: "photo", image, width, height}
    this.cover = config.vector ? Float32Array.from(config.vector) : null;
    this.ownVector = null;
    this.ownAt = 0;
    this.sizeIndex = 0;
    this.average = 0;
    this.sinceChange = 0;
    this.frames = [];
    this.busy = null;   // the painting under way (a promise)
    this.again = false; // asked for again while busy
    this.run = 0;       // a camera loop's generation: a new source ends the old loop
  }

  say(text) { this.status.textContent = text; }

  strength() { return Number(this.strengthInput.value) / 100; }

  setCover(vector, name) {
    this.cover = Float32Array.from(vector);
    this.config.name = name || this.config.name;
    this.refresh(true);
  }

  /* The painter, started once; the status says what is being fetched. */
  async ready() {
    if (!this.painter) {
      this.say("Loading the painter (about " + this.config.download + ")…");
      this.painter = new Painter(this.config);
      try {
        const info = await this.painter.ready;
        this.backend = info.backend === "webgpu" ? "WebGPU" : "WASM, " + info.threads + (info.threads === 1 ? " thread" : " threads");
        this.sizeIndex = SIZES.indexOf(info.backend === "webgpu" ? 384 : 256);
      } catch (error) {
        this.painter = null;
        throw error;
      }
    }
    await this.painter.ready;
  }

  /* The style vector to paint with: the cover's, mixed with the source's own below 100 %. */
  async vector(force) {
    const s = this.strength();
    if (s >= 1 || !this.source) { return this.cover; }
    const now = performance.now();
    if (!this.ownVector || force || (this.source.kind === "camera" && now - this.ownAt > OWN_EVERY_MS)) {
      if (!this.ownVector) { this.say("Loading the style reader for strengths below 100 %…"); }
      const [source, width, height] = this.dimensions();
      this.ownVector = await this.painter.own(grabSquare(source, width, height));
      this.ownAt = now;
    }
    const mixed = new Float32Array(this.cover.length);
    for (let i = 0; i < mixed.length; i += 1) {
      mixed[i] = s * this.cover[i] + (1 - s) * this.ownVector[i];
    }
    return mixed;
  }

  dimensions() {
    const source = this.source;
    if (source.kind === "camera") { return [source.video, source.video.videoWidth, source.video.videoHeight]; }
    return [source.image, source.width, source.height];
  }

  async paintAt(side, vectorForce) {
    const [source, width, height] = this.dimensions();
    const frame = grab(source, width, height, side, this.config.multiple);
    const vector = await this.vector(vectorForce);
    const painted = await this.painter.paint(frame, vector);
    this.show(painted);
    return painted;
  }

  show(painted) {
    const canvas = this.canvas;
    if (canvas.width !== painted.width || canvas.height !== painted.height) {
      canvas.width = painted.width;
      canvas.height = painted.height;
    }
    // Read back when saved (and by tests): a canvas kept in memory, not on the GPU.
    canvas.getContext("2d", { willReadFrequently: true })
      .putImageData(new ImageData(painted.pixels, painted.width, painted.height), 0, 0);
    this.stage.hidden = false;
    this.section.classList.add("has-painting");
    this.saveButton.disabled = false;
  }

  /* Frame time decides the size: see the top of this file. */
  adapt(ms) {
    this.average = this.average ? 0.7 * this.average + 0.3 * ms : ms;
    this.sinceChange += 1;
    const [, width, height] = this.dimensions();
    const top = SIZES.filter(function (s) { return s <= Math.max(width, height); });
    const limit = Math.max(0, top.length - 1);
    if (this.average > SLOW_MS && this.sizeIndex > 0 && this.sinceChange >= 2) {
      this.sizeIndex -= 1;
      this.average *= 0.7;
      this.sinceChange = 0;
    } else if (this.average < FAST_MS && this.sizeIndex < limit && this.sinceChange >= 4) {
      this.sizeIndex += 1;
      this.average *= 1.4;
      this.sinceChange = 0;
    }
    this.sizeIndex = Math.min(this.sizeIndex, limit);
  }

  report(painted) {
    const now = performance.now();
    this.frames.push(now);
    while (this.frames.length && now - this.frames[0] > 2000) { this.frames.shift(); }
    const live = this.source && this.source.kind === "camera";
    const fps = live && this.frames.length > 1 ? (this.frames.length - 1) * 1000 / (now - this.frames[0]) : 0;
    this.details.textContent = this.backend + " · " + painted.width + " × " + painted.height +
      " px" + (fps ? " · " + fps.toFixed(1) + " frames a second" : "");
    this.painted = (this.painted || 0) + 1;
    this.section.dataset.liveFrames = String(this.painted);
    this.section.dataset.liveFps = fps.toFixed(2);
    this.section.dataset.liveSize = String(Math.max(painted.width, painted.height));
  }

  /* --- the camera ---------------------------------------------------------------------- */
  async toggleCamera() {
    if (this.source && this.source.kind === "camera") { this.stopCamera(); return; }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.say(window.isSecureContext
        ? "This browser cannot use a camera here. You can still choose a photo."
        : "The camera needs the site to be opened over https. You can still choose a photo.");
      return;
    }
    this.say("Asking for the camera…");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 720 } },
      });
    } catch (error) {
      this.say(cameraMessage(error));
      this.cameraButton.focus();
      return;
    }
    let video = this.part("video");
    if (!video) {  // made here, not in the page: a video there would want captions
      video = document.createElement("video");
      video.className = "live__video";
      video.setAttribute("data-live-video", "");
      video.setAttribute("aria-hidden", "true");
      this.stage.appendChild(video);
    }
    video.muted = true;
    video.playsInline = true;  // iOS: play in the page, not full screen
    video.setAttribute("playsinline", "");
    video.srcObject = stream;
    try {
      await video.play();
    } catch (error) {
      stream.getTracks().forEach(function (t) { t.stop(); });
      this.say(cameraMessage(error));
      return;
    }
    if (!video.videoWidth) {
      await new Promise(function (resolve) { video.addEventListener("loadedmetadata", resolve, { once: true }); });
    }
    this.source = { kind: "camera", video: video, stream: stream };
    this.ownVector = null;
    this.cameraButton.setAttribute("aria-pressed", "true");
    this.cameraButton.textContent = "Stop the camera";
    try {
      await this.ready();
    } catch (error) {
      this.stopCamera();
      this.say("The painter could not start: " + error.message);
      return;
    }
    this.say("Painting your camera live.");
    this.loop(++this.run);
  }

  stopCamera() {
    const source = this.source;
    if (!source || source.kind !== "camera") { return; }
    source.stream.getTracks().forEach(function (t) { t.stop(); });
    source.video.srcObject = null;
    this.source = null;
    this.run += 1;
    this.cameraButton.setAttribute("aria-pressed", "false");
    this.cameraButton.textContent = "Start the camera";
    this.say("The camera is off. The last painting stays until you paint another.");
  }

  async loop(run) {
    while (this.run === run && this.source && this.source.kind === "camera") {
      await whenVisible();
      if (this.run !== run) { return; }
      try {
        this.busy = this.paintAt(SIZES[this.sizeIndex], false);
        const painted = await this.busy;
        this.adapt(painted.ms);
        this.report(painted);
      } catch (error) {
        this.say("Painting stopped: " + error.message);
        this.stopCamera();
        return;
      } finally {
        this.busy = null;
      }
      await nextFrame();
    }
  }

  /* --- a photo ------------------------------------------------------------------------- */
  async choosePhoto(file) {
    if (!file) { return; }
    let image;
    try {
      image = await createImageBitmap(file);
    } catch (error) {
      this.say("That file could not be read as a picture. Try a JPEG or PNG photo.");
      return;
    }
    this.stopCamera();
    if (this.busy) { await this.busy.catch(function () {}); }  // the camera's last frame
    this.source = { kind: "photo", image: image, width: image.width, height: image.height, name: file.name };
    this.ownVector = null;
    try {
      await this.ready();
    } catch (error) {
      this.say("The painter could not start: " + error.message);
      return;
    }
    this.refresh(true);
  }

  /* Paint the photo again (a new strength, another cover): quick, then at full size. */
  async refresh(full) {
    if (!this.source || this.source.kind !== "photo" || !this.painter) { return; }
    if (this.busy) { this.again = this.again || (full ? "full" : "quick"); return; }
    const force = this.ownVector === null;
    this.say("Painting your photo…");
    try {
      this.busy = (async () => {
        const quick = await this.paintAt(SIZES[this.sizeIndex], force);
        this.report(quick);
        if (full) {
          const still = await this.paintAt(STILL_SIDE, false);
          this.report(still);
        }
      })();
      await this.busy;
      this.say(full ? "Your photo, painted. Save it, or try another strength." : "Painting…");
    } catch (error) {
      this.say("Painting failed: " + error.message);
    } finally {
      this.busy = null;
    }
    if (this.again) {
      const again = this.again;
      this.again = false;
      this.refresh(again === "full");
    }
  }

  /* --- saving -------------------------------------------------------------------------- */
  async save() {
    if (!this.painter) { return; }
    this.saveButton.disabled = true;
    try {
      if (this.busy) { await this.busy.catch(function () {}); }
      if (this.source && this.source.kind === "camera") {
        this.say("Painting this frame at full size…");
        const run = ++this.run;  // pause the loop while the still is painted
        await this.paintAt(STILL_SIDE, false);
        const blob = await new Promise((resolve) => this.canvas.toBlob(resolve, "image/png"));
        this.download(blob);
        if (this.source && this.source.kind === "camera" && this.run === run) { this.loop(++this.run); }
      } else {
        const blob = await new Promise((resolve) => this.canvas.toBlob(resolve, "image/png"));
        this.download(blob);
      }
      this.say("Saved to your device as a PNG.");
    } catch (error) {
      this.say("Saving failed: " + error.message);
    } finally {
      this.saveButton.disabled = false;
    }
  }

  download(blob) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = (this.config.name || "painting") + ".png";
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
  }
}

export function start(section, config) {
  const panel = new LivePanel(section, config);
  window.addEventListener("pagehide", function () { panel.stopCamera(); });
  return panel;
}
