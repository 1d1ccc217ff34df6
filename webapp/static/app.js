// wordsight: small progressive enhancements; every page also works without this file.
"use strict";

// Submit a form when one of its [data-autosubmit] fields changes (index picker, top-k).
document.querySelectorAll("[data-autosubmit]").forEach(function (field) {
  field.addEventListener("change", function () { field.form.submit(); });
});

// The minimum-score slider hides results below it, live, and keeps the URL in step (bookmarkable).
(function () {
  var slider = document.getElementById("min-score");
  if (!slider) return;
  var shown = document.getElementById("min-score-value");
  function apply() {
    var min = parseFloat(slider.value);
    shown.textContent = min.toFixed(2);
    var visible = 0;
    document.querySelectorAll("#grid .hit").forEach(function (hit) {
      var keep = parseFloat(hit.dataset.score) >= min;
      hit.hidden = !keep;
      if (keep) visible += 1;
    });
    var count = document.getElementById("shown");
    if (count) count.textContent = String(visible);
    var url = new URL(window.location.href);
    if (url.searchParams.has("q")) {
      url.searchParams.set("min", slider.value);
      window.history.replaceState(null, "", url.toString());
    }
  }
  slider.addEventListener("input", apply);
})();

// Drag and drop a photo onto the upload zone: it goes into the file field and the form is sent.
(function () {
  var zone = document.getElementById("drop");
  var input = document.getElementById("file");
  if (!zone || !input) return;
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (!event.dataTransfer || !event.dataTransfer.files.length) return;
    input.files = event.dataTransfer.files;
    input.form.submit();
  });
  input.addEventListener("change", function () { if (input.files.length) input.form.submit(); });
})();
