// vmpanel: the only script besides htmx. It tells the user when a partial update failed
// (htmx keeps quiet about errors by default). Pages work without it.
document.addEventListener("htmx:responseError", function (event) {
  var box = document.getElementById("htmx-error");
  if (!box) return;
  var xhr = event.detail.xhr;
  box.textContent = box.dataset.template.replace("%s", xhr.status + " " + xhr.statusText);
  box.className = "banner banner-error";
});
document.addEventListener("htmx:sendError", function () {
  var box = document.getElementById("htmx-error");
  if (!box) return;
  box.textContent = box.dataset.offline;
  box.className = "banner banner-error";
});
document.addEventListener("htmx:beforeRequest", function () {
  var box = document.getElementById("htmx-error");
  if (box) box.textContent = "";
});
// Pages that update themselves (templates/_live.html): no asking while nobody can see the
// page, nor while someone is choosing rows or typing in it (a new page would undo that).
document.addEventListener("htmx:beforeRequest", function (event) {
  var elt = event.detail && event.detail.elt;
  if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-live")) return;
  var target = document.querySelector(elt.getAttribute("hx-target"));
  var busy =
    target &&
    (target.querySelector("input[name=pick]:checked") ||
      (target.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")));
  if (document.hidden || busy) event.preventDefault();
});
