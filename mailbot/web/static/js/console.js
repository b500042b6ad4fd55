// mailbot console: send the session's CSRF token with every htmx request.
// A static file, because the Content-Security-Policy forbids inline scripts.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute("content") : "";
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = token;
  });
  // The answer form's text follows the variables (each preview sends it again, out of
  // band) until the agent edits it or is in it: their text is never replaced.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "groupe-texte-modifie") return;
    var text = target.querySelector("#texte-modifie");
    var base = target.querySelector("#texte-base");
    if (!text || !base) return;
    var edited = text.value.replace(/\r\n/g, "\n") !== base.value.replace(/\r\n/g, "\n");
    if (edited || document.activeElement === text) event.detail.shouldSwap = false;
  });
  // A preview came: say what stops the sending, once (not the reply, read whole each time).
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (!target || (target.id !== "apercu" && target.id !== "apercu-libre")) return;
    var problem = document.getElementById(target.id + "-probleme");
    var status = document.getElementById("annonce-apercu");
    var said = problem ? problem.textContent.trim() : "";
    if (status && status.textContent !== said) status.textContent = said;
  });
  // A filter replaced the queue's table: say its new count (the focus stays on the filter).
  document.addEventListener("htmx:afterSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "file") return;
    var total = document.getElementById("total");
    var status = document.getElementById("annonce-file");
    if (total && status) status.textContent = total.textContent;
  });
})();
