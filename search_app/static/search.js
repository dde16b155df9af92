// The search page: choose a photo (picker, camera, drop, paste), crop it, and get results without a reload.
// Without JavaScript the form posts to /search and the server renders the results page instead.
(function () {
  "use strict";
  var CAPTION_METHODS = {
    "nearest-item-title": "The title of the nearest catalog item.",
    "neighbour-consensus": "The title that agrees best with the titles of the nearest catalog items.",
    "gru-annotator": "Written by the GRU annotator from the photo's embedding."
  };
  var STEP = 0.02;  // keyboard crop step, as a fraction of the photo
  var MIN_CROP = 0.02;

  var form = document.querySelector("[data-search-form]");
  var results = document.querySelector("[data-results]");
  if (!form || !results || !window.fetch) { return; }  // another page, or an old browser: plain form posts

  function $(selector, root) { return (root || document).querySelector(selector); }
  var zone = $("[data-drop-zone]", form), preview = $("[data-preview]", form), stage = $("[data-crop-stage]", form);
  var box = $("[data-crop-box]", form), cropArea = $("[data-crop-area]", form);
  var cropStatus = $("[data-crop-status]", form), cropClear = $("[data-crop-clear]", form);
  var category = $("[data-category]", form), submit = $("[data-submit]", form);
  var status = $("[data-status]"), errorBox = $("[data-error]"), errorMessage = $("[data-error-message]");
  var state = { file: null, crop: null, query: null, nextOffset: null, busy: false };

  // Choosing a photo -------------------------------------------------------------------------------
  function useFile(file) {
    if (!file) { return; }
    if (file.type && file.type.indexOf("image/") !== 0) {
      showError("“" + file.name + "” is not an image; choose a JPEG, PNG, GIF, WebP or BMP photo.");
      return;
    }
    state.file = file;
    setCrop(null);
    if (preview.src) { URL.revokeObjectURL(preview.src); }
    preview.src = URL.createObjectURL(file);
    cropArea.hidden = false;
    hideError();
    say("Photo ready: " + (file.name || "pasted image") + ". Press “Find similar items”.");
  }
  form.querySelectorAll("[data-file]").forEach(function (input) {
    input.addEventListener("change", function () { useFile(input.files && input.files[0]); });
  });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) { useFile(event.dataTransfer.files[0]); }
  });
  document.addEventListener("paste", function (event) {
    var items = (event.clipboardData && event.clipboardData.files) || [];
    for (var i = 0; i < items.length; i++) {
      if (items[i].type.indexOf("image/") === 0) { event.preventDefault(); useFile(items[i]); return; }
    }
  });

  // The crop rectangle, in fractions of the photo (the server crops after turning the photo upright) ---
  function clamp(value, low, high) { return Math.min(Math.max(value, low), high); }
  function setCrop(crop) {
    state.crop = crop;
    box.hidden = !crop;
    cropClear.hidden = !crop;
    ["x", "y", "w", "h"].forEach(function (key) {
      $("[data-crop-" + key + "]", form).value = crop ? crop[key].toFixed(4) : "";
    });
    if (!crop) { cropStatus.textContent = "Drag on the photo to search only part of it."; return; }
    box.style.left = 100 * crop.x + "%"; box.style.top = 100 * crop.y + "%";
    box.style.width = 100 * crop.w + "%"; box.style.height = 100 * crop.h + "%";
    cropStatus.textContent = "Searching the marked part: " + Math.round(100 * crop.w) + "% × " +
      Math.round(100 * crop.h) + "% of the photo, from " + Math.round(100 * crop.x) + "% across and " +
      Math.round(100 * crop.y) + "% down.";
  }
  function pointAt(event) {
    var rect = preview.getBoundingClientRect();
    return { x: clamp((event.clientX - rect.left) / rect.width, 0, 1), y: clamp((event.clientY - rect.top) / rect.height, 0, 1) };
  }
  var dragFrom = null;
  stage.addEventListener("pointerdown", function (event) {
    if (event.button !== 0) { return; }
    event.preventDefault();
    dragFrom = pointAt(event);
    stage.setPointerCapture(event.pointerId);
  });
  stage.addEventListener("pointermove", function (event) {
    if (!dragFrom) { return; }
    var to = pointAt(event);
    setCrop({ x: Math.min(dragFrom.x, to.x), y: Math.min(dragFrom.y, to.y),
              w: Math.abs(to.x - dragFrom.x), h: Math.abs(to.y - dragFrom.y) });
  });
  stage.addEventListener("pointerup", function () {
    dragFrom = null;
    if (state.crop && (state.crop.w < MIN_CROP || state.crop.h < MIN_CROP)) { setCrop(null); }
  });
  stage.addEventListener("keydown", function (event) {
    var crop = state.crop, dx = 0, dy = 0;
    if (event.key === "Enter" || event.key === " ") {
      if (!crop) { setCrop({ x: 0.2, y: 0.2, w: 0.6, h: 0.6 }); }
    } else if (event.key === "Delete" || event.key === "Backspace" || event.key === "Escape") {
      setCrop(null);
    } else if (event.key.indexOf("Arrow") === 0 && crop) {
      dx = event.key === "ArrowLeft" ? -STEP : event.key === "ArrowRight" ? STEP : 0;
      dy = event.key === "ArrowUp" ? -STEP : event.key === "ArrowDown" ? STEP : 0;
      if (event.shiftKey) {
        var w = clamp(crop.w + dx, MIN_CROP, 1 - crop.x), h = clamp(crop.h + dy, MIN_CROP, 1 - crop.y);
        setCrop({ x: crop.x, y: crop.y, w: w, h: h });
      } else {
        setCrop({ x: clamp(crop.x + dx, 0, 1 - crop.w), y: clamp(crop.y + dy, 0, 1 - crop.h), w: crop.w, h: crop.h });
      }
    } else {
      return;
    }
    event.preventDefault();
  });
  cropClear.addEventListener("click", function () { setCrop(null); stage.focus(); });

  // Searching ---------------------------------------------------------------------------------------
  function say(text) { status.textContent = text; }
  function showError(message) {
    errorMessage.textContent = message.charAt(0).toUpperCase() + message.slice(1);
    errorBox.hidden = false;
    say("");
  }
  function hideError() { errorBox.hidden = true; }

  function request(query, offset) {
    var k = query.k || 12;
    if (query.itemId) {
      var settings = new URLSearchParams({ k: String(k), offset: String(offset), category: category.value });
      var url = form.dataset.similarApi.replace("ITEM", encodeURIComponent(query.itemId));
      return fetch(url + "?" + settings.toString(), { headers: { "Accept": "application/json" } });
    }
    // The photo is the body and its settings the query string: the server then parses no multipart body.
    var params = new URLSearchParams();
    params.set("filename", query.file.name || "pasted-image.png");
    params.set("offset", String(offset));
    params.set("category", category.value);
    params.set("preview", offset ? "0" : "1");
    if (query.crop) { ["x", "y", "w", "h"].forEach(function (key) { params.set("crop_" + key, query.crop[key].toFixed(4)); }); }
    return fetch(form.dataset.api + "?" + params.toString(), {
      method: "POST", body: query.file,
      headers: { "Content-Type": query.file.type || "application/octet-stream", "Accept": "application/json" }
    });
  }

  function search(query, offset) {
    if (state.busy) { return; }
    state.busy = true;
    submit.disabled = true;
    results.setAttribute("aria-busy", "true");
    hideError();
    say(offset ? "Loading more items…" : "Searching…");
    request(query, offset).then(function (response) {
      return response.json().catch(function () { return { error: "the server answered " + response.status }; })
        .then(function (answer) {
          if (!response.ok) { throw new Error(answer.error || "the server answered " + response.status); }
          state.query = query;
          render(answer, offset > 0);
        });
    }).catch(function (error) {
      showError(error.message === "Failed to fetch" ? "the server could not be reached; try again" : error.message);
    }).then(function () {
      state.busy = false;
      submit.disabled = false;
      results.removeAttribute("aria-busy");
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!state.file) { showError("choose a photo first (or drop or paste one)"); $("#image").focus(); return; }
    search({ file: state.file, crop: state.crop }, 0);
  });
  category.addEventListener("change", function () { if (state.query) { search(state.query, 0); } });
  $("[data-more]", results).addEventListener("click", function () {
    if (state.query && state.nextOffset !== null) { search(state.query, state.nextOffset); }
  });
  results.addEventListener("click", function (event) {
    var link = event.target.closest("[data-item-id]");
    if (!link) { return; }
    event.preventDefault();
    search({ itemId: link.dataset.itemId }, 0);
  });

  // Showing the results -------------------------------------------------------------------------------
  function render(answer, append) {
    if (!append) { renderQuery(answer); }
    var grid = $("[data-grid]", results);
    if (!append) { grid.textContent = ""; }
    var first = null;
    answer.results.forEach(function (item) {
      var card = $("[data-card-template]").content.firstElementChild.cloneNode(true);
      var image = $("img", card);
      image.src = item.image_url;
      image.alt = item.title || (item.category + ", item " + item.item_id);
      $(".card-title", card).textContent = item.title || item.item_id;
      $(".card-category", card).textContent = item.category;
      var strength = $(".similarity", card);
      strength.textContent = "#" + item.rank + (item.match === null ? " · similarity " + item.similarity.toFixed(3)
        : " · " + item.match_label + " (" + item.match + ")");
      strength.title = "cosine similarity " + item.similarity.toFixed(4) + (item.match === null ? ""
        : "; closer than " + item.match + " % of catalog items are to their nearest neighbours");
      var more = $(".more-like", card);
      more.href = "/items/" + encodeURIComponent(item.item_id);
      more.dataset.itemId = item.item_id;
      more.setAttribute("aria-label", "More like " + (item.title || item.item_id));
      grid.appendChild(card);
      first = first || more;
    });
    state.nextOffset = answer.next_offset;
    $("[data-more]", results).hidden = answer.next_offset === null;
    var shown = grid.children.length;
    var empty = $("[data-empty]", results);
    empty.hidden = shown > 0;
    empty.textContent = answer.category ? "No items in the category “" + answer.category + "” to show." :
      "No similar items were found.";
    var where = answer.category ? " in “" + answer.category + "”" : "";
    $("[data-neighbours-heading]", results).textContent = shown ?
      "The " + shown + " most similar items" + where + " (of " + answer.available + ")" : "No items" + where;
    results.hidden = false;
    say(shown ? "Showing " + shown + " similar items" + where + "." : empty.textContent);
    if (append && first) { first.focus(); } else if (!append) { $("#results-heading").focus(); }
  }

  function renderQuery(answer) {
    var query = answer.query, image = $("[data-query-image]", results), caption = $("[data-query-caption]", results);
    if (query.kind === "item") {
      image.src = query.item.image_url;
      image.alt = query.item.title || (query.item.category + ", item " + query.item.item_id);
      caption.textContent = "More like: " + (query.item.title || query.item.item_id) + " (" + query.item.category + ")";
    } else {
      image.src = query.preview || preview.src;
      image.alt = "Your photo" + (query.crop ? ", cropped" : "");
      caption.textContent = "Your photo" + (query.crop ? ", cropped to " : ", ") + query.width + "×" + query.height + " pixels";
    }
    var list = $("[data-predictions]", results);
    list.textContent = "";
    answer.predictions.forEach(function (prediction, rank) {
      var row = $("[data-prediction-template]").content.firstElementChild.cloneNode(true);
      if (rank === 0) { row.classList.add("best"); }
      $(".prediction-name", row).textContent = prediction.category;
      $(".bar-fill", row).style.width = (100 * prediction.score).toFixed(1) + "%";
      $(".prediction-score", row).textContent = Math.round(100 * prediction.score) + "%";
      list.appendChild(row);
    });
    var text = $("[data-caption]", results), method = $("[data-caption-method]", results);
    if (answer.caption) {
      text.textContent = "“" + answer.caption.text + "”";
      method.textContent = CAPTION_METHODS[answer.caption.method] || "Made by: " + answer.caption.method + ".";
      var attributes = (answer.caption.attributes || []).map(function (a) { return a.name; });
      if (attributes.length) { method.textContent += " Likely attributes: " + attributes.join(", ") + "."; }
    } else {
      text.textContent = "";
      method.textContent = (answer.captions || "no caption").replace(/^./, function (c) { return c.toUpperCase(); }) + ".";
    }
  }
})();
