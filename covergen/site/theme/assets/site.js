/* covergen gallery: tag filter and comparison slider. Both are enhancements: without
   JavaScript every pair shows and the pair page shows its images side by side. */
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

  function start() {
    var bar = document.querySelector("[data-filters]");
    var grid = document.querySelector("[data-grid]");
    if (bar && grid) { setupFilter(bar, grid); }
    each(document.querySelectorAll("[data-compare]"), setupCompare);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
