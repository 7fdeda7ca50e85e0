// The label controls of the history and review pages: POST the chosen class, show what the server stored.
(function () {
  "use strict";

  async function save(form) {
    const status = form.querySelector(".label-status");
    const label = form.querySelector("select").value;
    status.textContent = "Saving…";
    let response;
    try {
      response = await window.authFetch("/v1/history/" + form.dataset.recordId + "/label", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({label: label}),
      });
    } catch (err) {
      status.textContent = "Not saved: the gateway did not answer.";
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      status.textContent = "Not saved: " + ((body.error && body.error.message) || response.status) +
        (retry ? " Try again in " + retry + " s." : "");
      return;
    }
    const row = form.closest("[data-record-id], tr, li");
    const correct = body.true_label === body.label;
    status.innerHTML = "";
    const badge = document.createElement("span");
    badge.className = "badge " + (correct ? "badge-ok" : "badge-warn");
    badge.textContent = correct ? "confirmed" : "was wrong: " + body.true_label;
    const who = document.createElement("span");
    who.className = "muted";
    who.textContent = " by " + body.labelled_by;
    status.append(badge, who);
    form.querySelector("button").textContent = "Relabel";
    if (row) row.classList.add("is-labelled");
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest(".label-form");
    if (!form) return;
    event.preventDefault();
    save(form);
  });
})();
