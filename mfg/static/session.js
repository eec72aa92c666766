// Never lose an entry to the idle timeout (issue 17, item 5, the session half).
//
// 1. A warning IDLE_WARNING_SECONDS (60 s) before the idle timeout, with "Stay signed in": a POST to
//    /auth/keep-alive, which refreshes the session on the server. The countdown runs from the page's last
//    contact with the server (typing in a form does not reach the server).
// 2. What is typed in any form is kept in this tab's sessionStorage, per page and form, for the signed-in user:
//    never a password, a user name, a CSRF token or another hidden field. When the session ends (this script
//    reloads the page at the timeout, or the server refuses a form sent too late, and the sign-in page shows),
//    the values are restored into the same form after the same user signs in again, with a notice. Nothing is
//    submitted: recording them needs a new signature. They are dropped when the page is loaded any other way
//    (after a submit the server answered, or a plain visit), at sign-out, and for any other user.
(function () {
  "use strict";
  var PREFIX = "mfg.draft:";
  var RESUME = "mfg.resume";
  var store;
  try { store = window.sessionStorage; } catch (e) { return; }
  if (!store) { return; }

  var body = document.body;
  var user = body.getAttribute("data-user") || "";

  function draftKeys() {
    var keys = [];
    for (var i = 0; i < store.length; i++) {
      var key = store.key(i);
      if (key && key.indexOf(PREFIX) === 0) { keys.push(key); }
    }
    return keys;
  }

  function dropAll() {
    draftKeys().forEach(function (key) { store.removeItem(key); });
    store.removeItem(RESUME);
  }

  // --- which fields are kept --------------------------------------------------------------------------
  var NEVER_TYPES = ["password", "hidden", "submit", "button", "reset", "file", "image"];
  var NEVER_AUTOCOMPLETE = ["username", "current-password", "new-password"];

  function kept(el) {
    if (!el.name || el.disabled || el.name === "csrf_token") { return false; }
    if (NEVER_TYPES.indexOf((el.type || "").toLowerCase()) >= 0) { return false; }
    if (NEVER_AUTOCOMPLETE.indexOf((el.getAttribute("autocomplete") || "").toLowerCase()) >= 0) { return false; }
    return el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT";
  }

  function draftable(form) {
    if (!form || (form.method || "").toLowerCase() !== "post" || form.hasAttribute("data-no-draft")) { return false; }
    return !/\/auth\/(logout|login|keep-alive)$/.test(new URL(form.action, location.href).pathname);
  }

  function formKey(form) {
    // the form's target and its place among the page's forms with the same target
    var same = Array.prototype.filter.call(document.forms, function (f) { return f.action === form.action; });
    return PREFIX + location.pathname + "#" + new URL(form.action, location.href).pathname + ":" + same.indexOf(form);
  }

  function save(form) {
    var fields = [];
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!kept(el)) { return; }
      if (el.type === "checkbox" || el.type === "radio") {
        fields.push({ name: el.name, value: el.value, checked: el.checked });
      } else {
        fields.push({ name: el.name, value: el.value });
      }
    });
    store.setItem(formKey(form), JSON.stringify({ user: user, path: location.pathname, fields: fields }));
  }

  function restore(form, draft) {
    var restored = 0;
    draft.fields.forEach(function (saved) {
      var named = form.elements.namedItem(saved.name);
      if (!named) { return; }
      var list = (named.length !== undefined && !named.tagName) ? Array.prototype.slice.call(named) : [named];
      list.forEach(function (el) {
        if (!kept(el)) { return; }
        if (el.type === "checkbox" || el.type === "radio") {
          if (el.value === saved.value && el.checked !== saved.checked) { el.checked = saved.checked; restored += saved.checked ? 1 : 0; }
        } else if (saved.value !== "" && el.value !== saved.value) {
          el.value = saved.value;
          restored += 1;
        }
      });
    });
    return restored;
  }

  function notice(text, className) {
    var box = document.createElement("div");
    box.className = "flash flash-warning " + className;
    box.setAttribute("role", "status");
    box.textContent = text;
    var main = document.querySelector("main") || body;
    main.insertBefore(box, main.firstChild);
    return box;
  }

  // --- signed out: the sign-in page -------------------------------------------------------------------
  if (!user) {
    if (draftKeys().length) {
      store.setItem(RESUME, "1");
      notice("What you typed before your session ended is kept in this browser. Sign in again to get it back " +
             "in its form; nothing of it was recorded.", "draft-kept");
    }
    return;
  }

  // --- signed in: restore after a session end, else drop ------------------------------------------------
  var resume = store.getItem(RESUME) === "1";
  store.removeItem(RESUME);
  var restoredFields = 0;
  var forms = Array.prototype.filter.call(document.forms, draftable);
  draftKeys().forEach(function (key) {
    var draft = null;
    try { draft = JSON.parse(store.getItem(key)); } catch (e) { draft = null; }
    var form = forms.filter(function (f) { return formKey(f) === key; })[0];
    if (!draft || draft.user !== user || draft.path !== location.pathname || !resume || !form) {
      store.removeItem(key);
      return;
    }
    restoredFields += restore(form, draft);
  });
  if (restoredFields) {
    notice("Restored " + restoredFields + " value(s) you typed before your session ended. Nothing was recorded: " +
           "check them, then sign to record them.", "draft-restored");
  }

  document.addEventListener("input", function (event) {
    if (event.target.form && draftable(event.target.form)) { save(event.target.form); }
  }, true);
  document.addEventListener("change", function (event) {
    if (event.target.form && draftable(event.target.form)) { save(event.target.form); }
  }, true);
  document.addEventListener("submit", function (event) {
    var action = new URL(event.target.action, location.href).pathname;
    if (/\/auth\/logout$/.test(action)) { dropAll(); }
  }, true);

  // --- the idle warning ---------------------------------------------------------------------------------
  var idleSeconds = parseFloat(body.getAttribute("data-idle-seconds"));
  var warnSeconds = parseFloat(body.getAttribute("data-idle-warning-seconds"));
  var keepAliveUrl = body.getAttribute("data-keep-alive");
  if (!(idleSeconds > 0) || !keepAliveUrl) { return; }
  var lastContact = Date.now();
  var ended = false;
  var warning = null;
  var countdown = null;

  function buildWarning() {
    warning = document.createElement("div");
    warning.className = "idle-warning";
    warning.setAttribute("role", "alertdialog");
    warning.setAttribute("aria-labelledby", "idle-warning-title");
    warning.hidden = true;
    var title = document.createElement("p");
    title.id = "idle-warning-title";
    var strong = document.createElement("strong");
    strong.appendChild(document.createTextNode("Your session ends in "));
    countdown = document.createElement("span");
    countdown.className = "idle-countdown";
    strong.appendChild(countdown);
    strong.appendChild(document.createTextNode(" s"));
    title.appendChild(strong);
    title.appendChild(document.createTextNode(" for inactivity."));
    var note = document.createElement("p");
    note.textContent = "What you have typed stays in this browser and comes back after you sign in again.";
    var button = document.createElement("button");
    button.type = "button";
    button.className = "button primary";
    button.textContent = "Stay signed in";
    button.addEventListener("click", stayAlive);
    warning.appendChild(title);
    warning.appendChild(note);
    warning.appendChild(button);
    body.insertBefore(warning, body.firstChild);
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function stayAlive() {
    fetch(keepAliveUrl, {
      method: "POST", credentials: "same-origin", redirect: "manual",
      headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" }
    }).then(function (response) {
      if (response.ok) {
        lastContact = Date.now();
        warning.hidden = true;
      } else {
        end();  // the session had already ended: the server sends the sign-in page
      }
    }, function () { /* no answer: the countdown goes on, the button stays */ });
  }

  function end() {
    if (ended) { return; }
    ended = true;
    store.setItem(RESUME, "1");  // also when the server kept the session after all: same user, same page
    location.assign(location.pathname + location.search);
  }

  function tick() {
    var elapsed = (Date.now() - lastContact) / 1000;
    if (elapsed >= idleSeconds + 2) { end(); return; }  // after the server's own timeout
    if (elapsed >= idleSeconds - warnSeconds) {
      if (!warning) { buildWarning(); }
      countdown.textContent = String(Math.max(0, Math.ceil(idleSeconds - elapsed)));
      if (warning.hidden) {
        warning.hidden = false;
        var active = document.activeElement;
        if (!active || !active.form) { warning.querySelector("button").focus(); }  // never steal a scan's focus
      }
    }
  }

  setInterval(tick, 500);
})();
