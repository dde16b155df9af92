// Small comforts for the search form: a preview of the chosen photo, drag and drop, and a busy button.
// The form works the same without JavaScript.
(function () {
  "use strict";
  document.querySelectorAll(".search-form").forEach(function (form) {
    var input = form.querySelector('input[type="file"]');
    var zone = form.querySelector("[data-drop-zone]");
    var preview = form.querySelector("[data-preview]");
    var button = form.querySelector("[data-submit]");
    if (!input || !zone) { return; }

    function showPreview() {
      var file = input.files && input.files[0];
      if (!preview || !file || !file.type.startsWith("image/")) { return; }
      if (preview.src) { URL.revokeObjectURL(preview.src); }
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    }

    input.addEventListener("change", showPreview);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        showPreview();
      }
    });
    form.addEventListener("submit", function () {
      if (button) { button.disabled = true; button.textContent = "Searching…"; }
    });
    // Coming back with the browser's Back button must not leave the button stuck.
    window.addEventListener("pageshow", function () {
      if (button) { button.disabled = false; button.textContent = button.dataset.label || button.textContent; }
    });
    if (button) { button.dataset.label = button.textContent; }
  });
})();
