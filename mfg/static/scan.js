// Scan first (issue 17, item 3). A keyboard-wedge scanner types its code fast and presses Enter.
// * A scan replaces what the field held: focusing a scan field selects its text, and a fast burst of
//   keystrokes (a scanner, not a person) replaces the text that was there before the burst began.
// * As the scan arrives (Enter, or the field left), the server's own check is asked (data-check-url: a
//   check character that does not match, a malformed code, a lot or equipment code that does not exist);
//   a misread says "scan again" beside the field and takes the focus back to it. Nothing is stored and
//   nothing is opened by this check; the server checks again on signing.
(function () {
  "use strict";

  var SCANNER_GAP_MS = 50;  // a scanner types faster than this between characters; a person does not
  var SCANNER_MIN_CHARS = 4;  // this many fast characters in a row are a scan
  var bursts = new WeakMap();

  function isScan(el) {
    return el && el.matches && el.matches("input[data-scan]");
  }

  function message(input) {
    var id = input.id + "-scan-check";
    var found = document.getElementById(id);
    if (!found) {
      found = document.createElement("p");
      found.id = id;
      found.className = "error scan-check";
      found.setAttribute("role", "alert");
      input.insertAdjacentElement("afterend", found);
      input.setAttribute("aria-describedby", id);
    }
    return found;
  }

  function clearMessage(input) {
    var found = document.getElementById(input.id + "-scan-check");
    if (found) { found.remove(); }
    input.removeAttribute("aria-invalid");
    input.closest(".field") && input.closest(".field").classList.remove("scan-misread");
  }

  function check(input) {
    var url = input.getAttribute("data-check-url");
    var value = input.value.trim();
    if (!url || !value) { clearMessage(input); return; }
    var query = (url.indexOf("?") < 0 ? "?" : "&") + "value=" + encodeURIComponent(value);
    fetch(url + query, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) {
        if (!answer || input.value.trim() !== value) { return; }  // unanswered, or scanned again meanwhile
        if (answer.ok) { clearMessage(input); return; }
        var shown = message(input);
        shown.textContent = answer.problems.join(" ");
        input.setAttribute("aria-invalid", "true");
        input.closest(".field") && input.closest(".field").classList.add("scan-misread");
        input.focus();
        input.select();  // the next scan replaces the misread one
      })
      .catch(function () { /* offline: the server checks on signing */ });
  }

  document.addEventListener("focusin", function (event) {
    var input = event.target;
    if (!isScan(input) || !input.value) { return; }
    setTimeout(function () { if (document.activeElement === input) { input.select(); } }, 0);
  });

  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (!isScan(input)) { return; }
    var now = performance.now();
    var burst = bursts.get(input);
    if (event.key === "Enter") {
      bursts.delete(input);
      check(input);  // app.js moves on to the next input
      return;
    }
    if (event.key.length !== 1 || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (!burst || now - burst.last > SCANNER_GAP_MS) {
      // a new burst: what the field holds without its selection (typing replaces a selection anyway)
      var before = input.value.slice(0, input.selectionStart) + input.value.slice(input.selectionEnd);
      burst = {before: before, chars: "", last: now};
      bursts.set(input, burst);
    }
    burst.chars += event.key;
    burst.last = now;
  });

  document.addEventListener("input", function (event) {
    var input = event.target;
    var burst = isScan(input) && bursts.get(input);
    if (!burst || burst.chars.length < SCANNER_MIN_CHARS || !burst.before) { return; }
    if (input.value !== burst.chars) { input.value = burst.chars; }  // a scan replaces the old text
  });

  document.addEventListener("change", function (event) {
    if (isScan(event.target)) { check(event.target); }
  });
}());
