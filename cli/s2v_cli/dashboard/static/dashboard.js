// s2v dashboard: refresh the parts of a page marked data-live while the page is visible, and draw
// the spend chart. No framework; every page works (without live updates) with scripts off.
(function () {
  "use strict";
  var SECONDS = 3;
  var chart = null;

  function note(text) {
    var el = document.getElementById("live-note");
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function drawSpend() {
    var data = document.getElementById("spend-data");
    var canvas = document.getElementById("spend-chart");
    if (!data || !canvas || typeof Chart === "undefined") { return; }
    var spend = JSON.parse(data.textContent);
    var sets = [{ type: "bar", label: "Estimated spend (USD)", data: spend.usd, backgroundColor: "#4a78a8" }];
    if (spend.budget !== null) {
      sets.push({ type: "line", label: "DailyBudgetUSD", data: spend.days.map(function () { return spend.budget; }),
                  borderColor: "#a4161a", borderDash: [6, 4], pointRadius: 0, fill: false });
    }
    if (chart) {
      chart.data.labels = spend.days;
      chart.data.datasets.forEach(function (set, i) { if (sets[i]) { set.data = sets[i].data; } });
      chart.update("none");
      return;
    }
    chart = new Chart(canvas, {
      data: { labels: spend.days, datasets: sets },
      options: { maintainAspectRatio: false, animation: false,
                 scales: { y: { beginAtZero: true, ticks: { callback: function (v) { return "$" + v; } } } },
                 plugins: { legend: { position: "bottom" } } }
    });
  }

  function refresh(region) {
    if (document.hidden) { return; }
    fetch(region.getAttribute("data-live"), { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          // An error page says what happened (the stack stopped, the key expired): show its message.
          return response.text().then(function (html) {
            var holder = document.createElement("div");
            holder.innerHTML = html;
            var message = holder.querySelector("#error-message");
            throw new Error(message ? message.textContent : "HTTP " + response.status);
          });
        }
        return response.text();
      })
      .then(function (html) {
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var marker = holder.querySelector("[data-state]");
        var was = region.getAttribute("data-reload-on-state");
        if (was && marker && marker.getAttribute("data-state") !== was) {
          window.location.reload();  // a new state can bring a video or other actions: show the whole page
          return;
        }
        // Never pull the content from under the keyboard: wait while focus is inside the region.
        if (region.contains(document.activeElement) && document.activeElement !== region) { return; }
        if (region.innerHTML.trim() !== holder.innerHTML.trim()) {
          region.innerHTML = holder.innerHTML;
          drawSpend();
        }
        note("Updated " + new Date().toISOString().slice(11, 19) + " UTC.");
      })
      .catch(function (error) { note("Could not refresh: " + error.message); });
  }

  // A portrait the browser cannot draw (a failed job's input need not be an image) says so in words.
  function fallback(img) {
    var text = document.createElement("p");
    text.className = "fallback";
    text.id = img.id;
    text.textContent = img.getAttribute("data-fallback");
    img.replaceWith(text);
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawSpend();
    document.querySelectorAll("img[data-fallback]").forEach(function (img) {
      if (img.complete && img.naturalWidth === 0) { fallback(img); return; }
      img.addEventListener("error", function () { fallback(img); });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
    var regions = document.querySelectorAll("[data-live]");
    if (!regions.length) { return; }
    window.setInterval(function () { regions.forEach(refresh); }, SECONDS * 1000);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { regions.forEach(refresh); }
    });
  });
})();
