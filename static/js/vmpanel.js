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
