/* covergen live panel: the painter. A module worker, started when the visitor presses a
   button, so that painting never blocks the page. It loads onnxruntime-web and the networks
   from the site itself (URLs given by the page) and answers one message at a time:
     init  {config, prefer, threads} -> ready {backend, threads}
     paint {pixels, width, height, vector} -> painted {pixels, width, height, ms}
     own   {pixels} (256 x 256)    -> vector {vector}  (loads the style predictor once)
   Pixels are RGBA bytes, as canvases give them; the networks take NHWC floats in 0..1. */

let ort = null;
let transformer = null;
let predictor = null;
let config = null;
let backend = "wasm";
let threads = 1;

/* WebGPU where there is a hardware adapter, else WASM. `prefer` (the page's ?backend=) can
   force "wasm", or "webgpu" even on a software adapter (to test that path anywhere). */
async function chooseBackend(prefer) {
  if (prefer === "wasm" || !self.navigator.gpu) { return "wasm"; }
  try {
    const adapter = await self.navigator.gpu.requestAdapter();
    if (!adapter) { return "wasm"; }
    // A software adapter (SwiftShader) is slower than WASM by far.
    const software = adapter.isFallbackAdapter || (adapter.info && adapter.info.isFallbackAdapter);
    return software && prefer !== "webgpu" ? "wasm" : "webgpu";
  } catch (error) {
    return "wasm";
  }
}

async function open(name) {
  const files = config.runtime[name];
  const runtime = await import(files.module);
  runtime.env.logLevel = "error";
  runtime.env.wasm.wasmPaths = { mjs: files.mjs, wasm: files.wasm };
  // More than one thread needs SharedArrayBuffer, which needs a cross-origin isolated page.
  runtime.env.wasm.numThreads = threads;
  const session = await runtime.InferenceSession.create(config.transformer, {
    executionProviders: [name],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
  });
  return [runtime, session];
}

async function init(message) {
  config = message.config;
  const cores = self.navigator.hardwareConcurrency || 1;
  threads = self.crossOriginIsolated ? Math.min(4, Math.max(1, Math.ceil(cores / 2))) : 1;
  if (self.crossOriginIsolated && message.threads) { threads = message.threads; }  // benchmarks
  backend = await chooseBackend(message.prefer);
  try {
    [ort, transformer] = await open(backend);
  } catch (error) {
    if (backend !== "webgpu") { throw error; }
    backend = "wasm";  // a WebGPU that fails to start: WASM always works
    [ort, transformer] = await open(backend);
  }
  return { type: "ready", backend: backend, threads: backend === "wasm" ? threads : 0 };
}

function toInput(pixels, count) {
  const input = new Float32Array(count * 3);
  for (let i = 0, j = 0; i < count; i += 1, j += 4) {
    input[i * 3] = pixels[j] / 255;
    input[i * 3 + 1] = pixels[j + 1] / 255;
    input[i * 3 + 2] = pixels[j + 2] / 255;
  }
  return input;
}

async function paint(message) {
  const count = message.width * message.height;
  const feeds = {};
  feeds[config.inputs[0]] = new ort.Tensor(
    "float32", toInput(message.pixels, count), [1, message.height, message.width, 3]);
  feeds[config.inputs[1]] = new ort.Tensor("float32", message.vector, [1, 1, 1, 100]);
  const start = performance.now();
  const results = await transformer.run(feeds);
  const ms = performance.now() - start;
  const output = results[transformer.outputNames[0]];
  const [, height, width] = output.dims;
  const data = output.data;
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let i = 0, j = 0; i < width * height; i += 1, j += 4) {
    pixels[j] = data[i * 3] * 255 + 0.5;
    pixels[j + 1] = data[i * 3 + 1] * 255 + 0.5;
    pixels[j + 2] = data[i * 3 + 2] * 255 + 0.5;
    pixels[j + 3] = 255;
  }
  if (output.dispose) { output.dispose(); }
  return { type: "painted", pixels: pixels, width: width, height: height, ms: ms };
}

async function own(message) {
  if (!predictor) {
    predictor = await ort.InferenceSession.create(config.predictor, {
      executionProviders: [backend], graphOptimizationLevel: "all", logSeverityLevel: 3,
    });
  }
  const feeds = {};
  feeds[predictor.inputNames[0]] = new ort.Tensor(
    "float32", toInput(message.pixels, 256 * 256), [1, 256, 256, 3]);
  const results = await predictor.run(feeds);
  const vector = Float32Array.from(results[predictor.outputNames[0]].data);
  return { type: "vector", vector: vector };
}

const HANDLERS = { init: init, paint: paint, own: own };

// One message at a time, in order: a session runs one inference at a time anyway.
let queue = Promise.resolve();
self.onmessage = function (event) {
  const message = event.data;
  queue = queue.then(async function () {
    try {
      const reply = await HANDLERS[message.type](message);
      reply.id = message.id;
      self.postMessage(reply, reply.pixels ? [reply.pixels.buffer] : []);
    } catch (error) {
      self.postMessage({ type: "error", id: message.id, message: String(error && error.message || error) });
    }
  });
};
