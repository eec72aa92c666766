// Scan first (issue 17, item 3). A keyboard-wedge scanner types its code and presses Enter.
// * A scan replaces what the field held. A scan field's value is complete once the page brought it, once
//   Enter ended it or once the field was left; the first character typed into a complete value replaces it
//   (focusing the field also selects it). Editing keys first (Backspace, Delete, arrows, Home, End) mean a
//   person is correcting the value by hand: then nothing is replaced. No timing is guessed, so a scanner that
//   pauses in the middle of a code never loses its first characters.
// * As the scan arrives (Enter, or the field left), the server's own check is asked (data-check-url: a
//   check character that does not match, a malformed code, a lot or equipment code that does not exist);
//   a misread says "scan again" beside the field and takes the focus back to it. Nothing is stored and
//   nothing is opened by this check; the server checks again on signing.
(function () {
  "use strict";

  var EDITING = ["Backspace", "Delete", "ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"];
  var complete = new WeakSet();  // scan fields whose value is a finished entry

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
    // the server's refusal beside the field was about the scan this one replaced: it goes with it
    var refused = document.getElementById("err-" + input.id.replace(/^v_/, ""));
    if (refused) { refused.remove(); }
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
    var field = input.closest(".field");
    if (field) { field.classList.remove("scan-misread", "has-error"); }
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
    if (event.key === "Enter") {
      complete.add(input);
      check(input);  // app.js moves on to the next input
      return;
    }
    if (EDITING.indexOf(event.key) >= 0) { complete.delete(input); return; }
    if (event.key.length !== 1 || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (complete.has(input)) {
      input.value = "";  // a new scan into a finished one: the key that follows is its first character
      complete.delete(input);
      clearMessage(input);
    }
  });

  document.addEventListener("change", function (event) {
    if (isScan(event.target)) {
      complete.add(event.target);
      check(event.target);
    }
  });

  function init() {
    var scans = document.querySelectorAll("input[data-scan]");
    for (var i = 0; i < scans.length; i++) {
      if (scans[i].value) { complete.add(scans[i]); }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
