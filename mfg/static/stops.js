// Stops you cannot miss (issue 17, item 1). The server draws a hard stop (an identity mismatch, a blocked,
// expired or unreleased product) as <dialog open data-stop> at the top of the page, so it shows without
// script. Here it is opened again as a modal dialog (showModal): the rest of the page becomes inert until
// the stop is dismissed, the page is at its top, and the focus is on the stop, not on a field further down.
// Dismissing it puts the focus on the first scan to take again (an empty scan field).
(function () {
  "use strict";

  function firstEmptyScan() {
    var scans = document.querySelectorAll("input[data-scan]");
    for (var i = 0; i < scans.length; i++) {
      if (!scans[i].value && !scans[i].disabled) { return scans[i]; }
    }
    return null;
  }

  function open(stop) {
    if (typeof stop.showModal !== "function") { return; }  // a browser without <dialog>: drawn open, on top
    stop.removeAttribute("open");  // drawn open by the server; close() would fire "close" later
    stop.showModal();
    window.scrollTo(0, 0);
    stop.focus();
    // No Escape: the stop is dismissed with its button, deliberately.
    stop.addEventListener("cancel", function (event) { event.preventDefault(); });
    stop.addEventListener("close", function () {
      var next = firstEmptyScan();
      if (next) { next.focus(); }
      stop.remove();  // dismissed: it is not drawn again in the page
    });
  }

  function init() {
    var stop = document.querySelector("dialog[data-stop]");
    if (stop) { open(stop); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
