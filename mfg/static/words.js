// Issue 17, item 8 "Human words": a moment shows the site's time; its UTC form is in the title (hover).
// A tablet has no hover: a tap on a moment shows its UTC form beside it, a second tap hides it.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var moment = event.target.closest ? event.target.closest("time[title]") : null;
    if (!moment || moment.closest("a, button, summary")) { return; }
    moment.classList.toggle("show-utc");
  });
})();
