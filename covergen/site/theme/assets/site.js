/* covergen gallery: tag filter, comparison slider and the "Paint yourself" panel. All are
   enhancements: without JavaScript every pair shows, the pair page shows its images side by
   side, and the panel is hidden (site.css). The panel's code and the runtime it needs load
   only when the visitor presses one of its buttons (assets/live.js). */
(function () {
  "use strict";

  function each(list, fn) { Array.prototype.forEach.call(list, fn); }

  /* --- tag filter (index) ---------------------------------------------------------------- */
  function setupFilter(bar, grid) {
    var cards = Array.prototype.slice.call(grid.children);
    var buttons = bar.querySelectorAll("button[data-tag]");
    var status = bar.querySelector("[data-filter-status]");
    var known = {};
    each(buttons, function (b) { known[b.getAttribute("data-tag")] = true; });

    function tagsOf(card) {
      try { return JSON.parse(card.getAttribute("data-tags") || "[]"); } catch (e) { return []; }
    }
    function fromHash() {
      var match = /^#tag=(.*)$/.exec(window.location.hash);
      var tag = "";
      if (match) { try { tag = decodeURIComponent(match[1]); } catch (e) { tag = ""; } }
      return known[tag] ? tag : "";
    }
    function apply(tag) {
      var shown = 0;
      cards.forEach(function (card) {
        var match = !tag || tagsOf(card).indexOf(tag) !== -1;
        card.hidden = !match;
        if (match) { shown += 1; }
      });
      each(buttons, function (b) {
        b.setAttribute("aria-pressed", String(b.getAttribute("data-tag") === tag));
      });
      if (status) {
        status.textContent = tag ? shown + " of " + cards.length + " tagged \u201c" + tag + "\u201d" : "";
      }
    }
    function remember(tag) {
      var query = tag ? "tag=" + encodeURIComponent(tag) : "";
      // replaceState keeps the back button for real navigation; file:// may refuse it.
      try {
        window.history.replaceState(
          null, "", query ? "#" + query : window.location.pathname + window.location.search);
      } catch (e) {
        window.location.hash = query;
      }
    }

    each(buttons, function (button) {
      button.addEventListener("click", function () {
        var tag = button.getAttribute("data-tag");
        if (button.getAttribute("aria-pressed") === "true") { tag = ""; }
        apply(tag);
        remember(tag);
      });
    });
    window.addEventListener("hashchange", function () { apply(fromHash()); });
    bar.hidden = false;
    apply(fromHash());
  }

  /* --- comparison slider (pair page) ----------------------------------------------------- */
  function setupCompare(figure) {
    var stage = figure.querySelector("[data-compare-stage]");
    var range = figure.querySelector("[data-compare-range]");
    if (!stage || !range) { return; }

    function show(value) {
      var photo = Number(value);
      stage.style.setProperty("--pos", photo + "%");
      range.setAttribute("aria-valuetext", photo + "% photo, " + (100 - photo) + "% painting");
    }
    // The range input covers the whole picture; mapping the pointer's position straight to a
    // value lets mouse and touch grab anywhere, not only the (invisible) thumb.
    function follow(event) {
      var box = stage.getBoundingClientRect();
      var fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
      range.value = String(Math.round(fraction * 100));
      show(range.value);
    }
    range.addEventListener("input", function () { show(range.value); });
    range.addEventListener("pointerdown", function (event) {
      if (range.setPointerCapture) { range.setPointerCapture(event.pointerId); }
      follow(event);
    });
    range.addEventListener("pointermove", function (event) {
      if (range.hasPointerCapture && range.hasPointerCapture(event.pointerId)) { follow(event); }
    });
    show(range.value);
    figure.classList.add("is-ready");
  }

  /* --- "Paint yourself" (pair pages, live.html) ---------------------------------------- */
  function setupLive(section) {
    var config;
    try { config = JSON.parse(section.getAttribute("data-live")); } catch (e) { return; }
    function part(name) { return section.querySelector("[data-live-" + name + "]"); }
    var status = part("status");
    var camera = part("camera");
    var file = part("file");
    var strength = part("strength");
    var shown = part("strength-value");
    var save = part("save");
    var loading = null;

    if (window.location.protocol === "file:") {
      // Browsers run neither module workers nor WebAssembly fetches from a file.
      status.textContent = "Painting needs the gallery served from a web server " +
        "(covergen serve, or where it is published): browsers do not run it from a file.";
      camera.disabled = true;
      file.disabled = true;
      return;
    }
    function panel() {
      if (!loading) {
        var url = new URL(config.module, document.baseURI).href;
        loading = import(url).then(function (module) { return module.start(section, config); });
        loading.catch(function () {
          loading = null;
          status.textContent = "The painter could not be loaded. Check the connection and press again.";
        });
      }
      return loading;
    }
    camera.addEventListener("click", function () {
      panel().then(function (live) { return live.toggleCamera(); });
    });
    file.addEventListener("change", function () {
      var chosen = file.files && file.files[0];
      file.value = "";  // choosing the same photo again paints it again
      if (chosen) { panel().then(function (live) { return live.choosePhoto(chosen); }); }
    });
    strength.addEventListener("input", function () {
      shown.textContent = strength.value + " %";
      if (loading) { loading.then(function (live) { live.refresh(false); }); }
    });
    strength.addEventListener("change", function () {
      if (loading) { loading.then(function (live) { live.refresh(true); }); }
    });
    save.addEventListener("click", function () {
      if (loading) { loading.then(function (live) { return live.save(); }); }
    });
    each(section.querySelectorAll("[data-live-cover]"), function (radio) {
      radio.addEventListener("change", function () {
        var cover;
        try { cover = JSON.parse(radio.getAttribute("data-live-cover")); } catch (e) { return; }
        config.vector = cover.vector;
        config.name = cover.name;
        var named = part("style");
        if (named) { named.textContent = cover.album; }
        if (loading) { loading.then(function (live) { live.setCover(cover.vector, cover.name); }); }
      });
    });
    // A form the browser restored (the back button) may have another cover or strength.
    shown.textContent = strength.value + " %";
    var checked = section.querySelector("[data-live-cover]:checked");
    if (checked) {
      try {
        var cover = JSON.parse(checked.getAttribute("data-live-cover"));
        config.vector = cover.vector;
        config.name = cover.name;
        if (part("style")) { part("style").textContent = cover.album; }
      } catch (e) { /* the page's first cover stays */ }
    }
  }

  function start() {
    var bar = document.querySelector("[data-filters]");
    var grid = document.querySelector("[data-grid]");
    if (bar && grid) { setupFilter(bar, grid); }
    each(document.querySelectorAll("[data-compare]"), setupCompare);
    each(document.querySelectorAll("[data-live]"), setupLive);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
