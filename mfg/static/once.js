// Do once (issue 17, item 4): every form that posts carries a one-time submission token. The server claims
// it in the same transaction as what the submission does; a second submission with the same token (a double
// tap, a reload that posts again, a resubmission) is answered with the first one's result and creates nothing.
// A page shown again after a refused submission is a new page with new tokens.
(function () {
  "use strict";
  var FIELD = "submission_token";

  function token() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);  // available on plain http too (randomUUID is not)
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function stamp(form) {
    if ((form.getAttribute("method") || "").toLowerCase() !== "post" || form.elements[FIELD]) {
      return;
    }
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = FIELD;
    input.value = token();
    form.appendChild(input);
  }

  function stampAll() {
    Array.prototype.forEach.call(document.querySelectorAll("form"), stamp);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", stampAll);
  } else {
    stampAll();
  }
  // a form added later, or one submitted before the page finished loading
  document.addEventListener("submit", function (event) { stamp(event.target); }, true);
})();
