// Scanner-friendly inputs: a barcode scanner types the code and presses Enter. In a scan field,
// Enter moves to the next input instead of submitting a half-filled step.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  if (event.key !== "Enter" || !target.matches || !target.matches("input[data-scan]")) { return; }
  event.preventDefault();
  var inputs = Array.prototype.slice.call(target.form.querySelectorAll("input, textarea, select, button"))
    .filter(function (el) {  // skip what cannot take focus, such as inputs inside a closed <details>
      return !el.disabled && el.type !== "hidden" && (el.checkVisibility ? el.checkVisibility() : el.offsetParent !== null);
    });
  var next = inputs[inputs.indexOf(target) + 1];
  if (next) { next.focus(); }
});
