// Flow on the batch and step screens (issue 17, items 6 and 7). Plain JS, no library, served locally.
// - Countdowns tick: every element .countdown[data-due] shows the time left to its server-given deadline
//   (ISO 8601, UTC), measured on the server's clock (data-server-now, the moment the page was drawn).
// - The batch page polls its version (.live-update[data-version-url]: everything the page shows, see
//   services/batch_pages.page_version). When another person changed the batch the page does not go stale: it
//   reloads itself (the browser keeps the scroll position, as the browser test asserts) unless a reload would
//   lose something of the person looking at it: typed input (a field whose value differs from the one it was
//   drawn with), a field with the focus (being typed into), an open <dialog>, or a <details> opened or closed
//   since the page was drawn (the hand-opened deviation form, say). Then it says who changed the batch, with a
//   Reload button, and waits for that click, so nothing typed is lost.
// - A value's comment box shows when the value needs one (outside the limits the screen states), or on request.
(function () {
  "use strict";

  // --- countdowns ---------------------------------------------------------------------------------------
  var loadedAt = Date.now();

  function countdownText(el) {
    var due = Date.parse(el.getAttribute("data-due"));
    var serverNow = Date.parse(el.getAttribute("data-server-now"));
    if (isNaN(due)) { return null; }
    var now = isNaN(serverNow) ? Date.now() : serverNow + (Date.now() - loadedAt);
    var minutes = Math.floor((due - now) / 60000);  // as the server counts: whole minutes, rounded down
    if (minutes < 0) {
      var past = el.getAttribute("data-past");
      if (past) { return past; }
      var over = -minutes;
      return "overdue by " + Math.floor(over / 60) + " h " + (over % 60) + " min";
    }
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min left";
  }

  function tick() {
    var clocks = document.querySelectorAll(".countdown[data-due]");
    for (var i = 0; i < clocks.length; i++) {
      var text = countdownText(clocks[i]);
      if (text !== null && clocks[i].textContent !== text) {
        clocks[i].textContent = text;
        var overdue = text.indexOf("overdue") === 0 || text === clocks[i].getAttribute("data-past");
        clocks[i].classList.toggle("overdue", overdue);
      }
    }
  }

  // --- live updates of the batch page -------------------------------------------------------------------
  // Would reloading the page lose something of the person looking at it? ``drawn``: whether each <details>
  // was open when the page was drawn.
  function busy(drawn) {
    var fields = document.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.type === "hidden" || field.type === "submit" || field.type === "button") { continue; }
      if (field.type === "checkbox" || field.type === "radio") {
        if (field.checked !== field.defaultChecked) { return true; }
      } else if (field.tagName === "SELECT") {
        for (var j = 0; j < field.options.length; j++) {
          if (field.options[j].selected !== field.options[j].defaultSelected) { return true; }
        }
      } else if (field.value !== field.defaultValue) {
        return true;
      }
    }
    var active = document.activeElement;
    if (active && active !== document.body && active.matches &&
        active.matches("input:not([type=hidden]), textarea, select, [contenteditable]")) { return true; }
    if (document.querySelector("dialog[open]")) { return true; }
    var details = document.querySelectorAll("details");
    for (var k = 0; k < details.length; k++) {
      if (details[k].open !== drawn[k]) { return true; }
    }
    return false;
  }

  function watch(box) {
    var url = box.getAttribute("data-version-url");
    var seen = box.getAttribute("data-version");
    var every = Math.max(1, parseFloat(box.getAttribute("data-poll-seconds")) || 5) * 1000;
    var timer = null;
    var drawn = Array.prototype.map.call(document.querySelectorAll("details"), function (d) { return d.open; });

    function announce(data) {
      var text = "This batch was updated";
      if (data.by) { text = "Updated by " + data.by + (data.at ? " at " + data.at : "") + ": reload to see it"; }
      box.querySelector(".live-update-text").textContent = text;
      box.hidden = false;
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (response.redirected || !response.ok) {  // signed out (idle timeout): show the sign-in page
            window.clearInterval(timer);
            window.location.reload();
            return null;
          }
          return response.json();
        })
        .then(function (data) {
          if (data && data.version !== seen) {
            window.clearInterval(timer);  // once: the reload draws the page anew, and polls again
            if (busy(drawn)) {
              announce(data);  // nothing typed is lost: the person reloads when ready
            } else {
              window.location.reload();
            }
          }
        })
        .catch(function () { /* the network is back at the next poll */ });
    }

    timer = window.setInterval(poll, every);
  }

  // --- the comment box of a value ----------------------------------------------------------------------
  function showComment(field, focus) {
    var box = field && field.querySelector(".value-comment");
    if (!box) { return; }
    box.hidden = false;
    var ask = field.querySelector(".add-comment");
    if (ask) { ask.hidden = true; }
    if (focus) { box.querySelector("input, textarea").focus(); }
  }

  function outside(input) {
    var text = input.value.trim();
    if (text === "") { return false; }
    var value = Number(text);
    if (isNaN(value)) { return false; }  // malformed: the server says so
    var min = input.getAttribute("data-min"), max = input.getAttribute("data-max"),
      below = input.getAttribute("data-below");
    return (min !== null && value < Number(min)) || (max !== null && value > Number(max)) ||
      (below !== null && value >= Number(below));
  }

  document.addEventListener("click", function (event) {
    var ask = event.target.closest && event.target.closest(".add-comment");
    if (!ask) { return; }
    event.preventDefault();
    showComment(ask.closest(".field"), true);
  });

  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target.matches && target.matches("input[data-min], input[data-max], input[data-below]") && outside(target)) {
      showComment(target.closest(".field"), false);
    }
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    var group = target.closest && target.closest("fieldset[data-acceptable]");
    if (!group || target.type !== "radio" || !target.checked) { return; }
    var acceptable = JSON.parse(group.getAttribute("data-acceptable"));
    if (acceptable.indexOf(target.value) < 0) { showComment(group.closest(".field"), false); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var fields = document.querySelectorAll("input[data-min], input[data-max], input[data-below]");
    for (var i = 0; i < fields.length; i++) {
      if (outside(fields[i])) { showComment(fields[i].closest(".field"), false); }
    }
    if (document.querySelector(".countdown[data-due]")) {
      tick();
      window.setInterval(tick, 1000);
    }
    var box = document.querySelector(".live-update[data-version-url]");
    if (box) { watch(box); }
  });
})();
