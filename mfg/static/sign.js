// sign.js (issue 17 items 2 and 5, "See what you sign" and "Never lose an entry").
// * A step form with data-preview asks the server what signing would record now (the same calculation the
//   signing runs) whenever an input changes, and shows each calculated value with the inputs it came from,
//   the dose plan's bags and the list of values being signed. The browser never computes a GMP value.
// * After a refused entry, the first field marked aria-invalid is focused and scrolled into view; when only
//   the signature failed, the password field is.
(function () {
  "use strict";

  function text(el, value) { if (el) { el.textContent = value; } }

  function item(label, value) {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.className = "input-label";
    name.textContent = label;
    var shown = document.createElement("span");
    shown.className = "input-value";
    shown.textContent = value || "not entered yet";
    li.appendChild(name);
    li.appendChild(document.createTextNode(": "));
    li.appendChild(shown);
    return li;
  }

  function cell(row, tag, value) {
    var c = document.createElement(tag);
    c.textContent = value;
    row.appendChild(c);
    return c;
  }

  function showBags(data) {
    var box = document.getElementById("bag-plan");
    if (!box) { return; }
    box.textContent = "";
    if (!data.bags.length) {
      var p = document.createElement("p");
      p.className = "hint";
      p.textContent = "Bags of the dose plan: " + (data.bag_note || "shown when the volume to infuse is calculated");
      box.appendChild(p);
      return;
    }
    var table = document.createElement("table");
    table.className = "bag-plan";
    var caption = document.createElement("caption");
    caption.textContent = "Bags of the dose plan";
    table.appendChild(caption);
    var withExpiry = data.bags[0].expires !== "";
    var head = document.createElement("tr");
    ["Bag", "Volume", "NK cells", "Viable cells"].concat(withExpiry ? ["Expires"] : []).forEach(function (h) {
      cell(head, "th", h);
    });
    var thead = document.createElement("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = document.createElement("tbody");
    data.bags.forEach(function (b) {
      var row = document.createElement("tr");
      [String(b.index), b.volume, b.nk_cells, b.viable_cells].concat(withExpiry ? [b.expires] : []).forEach(function (v) {
        cell(row, "td", v);
      });
      body.appendChild(row);
    });
    table.appendChild(body);
    box.appendChild(table);
  }

  function show(form, data) {
    data.fields.forEach(function (f) {
      if (f.calculated) {
        text(document.getElementById("calc-" + f.id), f.text || "—");
        text(document.getElementById("calc-problem-" + f.id), f.text ? "" : f.problems.join("; "));
        var list = document.getElementById("calc-inputs-" + f.id);
        if (list) {
          list.textContent = "";
          f.inputs.forEach(function (i) { list.appendChild(item(i.label, i.text)); });
        }
      }
      var signed = form.querySelector('#signing-values tr[data-field="' + f.id + '"] td');
      text(signed, f.text || (f.calculated ? "not calculated yet" : "not entered"));
    });
    showBags(data);
  }

  function previewer(form) {
    var url = form.getAttribute("data-preview");
    var timer = null;
    var asked = 0;
    function ask() {
      var mine = ++asked;
      var body = new FormData(form);
      body.delete("password");  // the preview never needs, and never gets, the signature
      body.delete("username");
      body.delete("submission_token");  // the preview stores nothing: the form's one-time token is for signing
      fetch(url, { method: "POST", body: body, credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (data && mine === asked) {  // only the answer to the latest values
            show(form, data);
            form.setAttribute("data-previewed", String(mine));
          }
        })
        .catch(function () { /* the server calculates again at signing */ });
    }
    function later(event) {
      if (event.target && (event.target.name === "password" || event.target.name === "username")) { return; }
      window.clearTimeout(timer);
      timer = window.setTimeout(ask, 250);
    }
    form.addEventListener("input", later);
    form.addEventListener("change", later);
  }

  function focusFirstProblem() {
    var first = document.querySelector("form [aria-invalid='true']");
    if (first) {
      var target = first.tagName === "FIELDSET" ? first.querySelector("input") || first : first;
      target.focus({ preventScroll: true });
      first.scrollIntoView({ block: "center" });
      return;
    }
    if (document.querySelector(".error-summary, form.keeps-values .form-error")) {
      var password = document.querySelector("form.step-form input[type='password'], form.keeps-values input[type='password']");
      if (password) {
        password.focus({ preventScroll: true });
        password.scrollIntoView({ block: "center" });
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-preview]"), previewer);
    focusFirstProblem();
  });
}());
