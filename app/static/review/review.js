// The review page's keyboard and saving: each change goes through the specimen API
// (PATCH /specimens/{id}/cells/{cell}) with the session's CSRF token; the cell moves to
// its new group and the differential updates from the answer. No inline script: the
// page's Content-Security-Policy allows only this file.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const sid = root.dataset.specimen;
  const KEYS = { e: "eosinophil", l: "lymphocyte", m: "monocyte", n: "neutrophil" };
  const notice = (text) => { document.getElementById("notice").textContent = text; };
  const cells = () => Array.from(document.querySelectorAll("li.cell"));
  let selected = null;

  function show(li) {
    const probs = JSON.parse(li.dataset.probabilities || "{}");
    const reasons = li.dataset.reasons ? " Needs review: " + li.dataset.reasons + "." : "";
    document.getElementById("selected-text").textContent =
      "Cell " + li.dataset.cell + ": " + li.dataset.label + "." + reasons;
    const body = document.querySelector("#probabilities tbody");
    body.replaceChildren();
    Object.entries(probs).forEach(([name, p]) => {
      const row = document.createElement("tr");
      const a = document.createElement("td");
      const b = document.createElement("td");
      a.textContent = name;
      b.textContent = (100 * p).toFixed(1) + "%";
      row.append(a, b);
      body.append(row);
    });
    const heat = document.getElementById("heatmap");
    heat.src = "/specimens/" + sid + "/cells/" + li.dataset.cell + "/explain";
    heat.hidden = false;
  }

  function select(li) {
    if (!li) return;
    if (selected) selected.classList.remove("selected");
    selected = li;
    li.classList.add("selected");
    li.querySelector("button.pick").focus();
    show(li);
  }

  function move(step) {
    const list = cells();
    const i = Math.max(0, list.indexOf(selected) + step);
    select(list[Math.min(list.length - 1, i)]);
  }

  function updateCounts(differential) {
    document.querySelectorAll("section.group").forEach((group) => {
      group.querySelector(".count").textContent =
        "(" + group.querySelectorAll("li.cell").length + ")";
    });
    Object.entries(differential.counts).forEach(([name, row]) => {
      const tr = document.querySelector('#differential tr[data-class="' + name + '"]');
      tr.querySelector(".n").textContent = row.count;
      tr.querySelector(".p").textContent = row.percent;
    });
    document.getElementById("classified").textContent = differential.classified;
  }

  async function setLabel(li, label) {
    if (!li || li.dataset.label === label) return;
    if (root.dataset.status !== "open") {
      notice("This specimen is signed: amend it (with a reason) before changing a cell.");
      return;
    }
    const started = performance.now();
    const response = await fetch("/specimens/" + sid + "/cells/" + li.dataset.cell, {
      method: "PATCH",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ label: label, version: Number(root.dataset.version) }),
    });
    if (response.status === 409) {
      window.location.assign("/review/" + sid + "?stale=1");
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      notice(body.detail || "The change was not saved (" + response.status + ").");
      return;
    }
    root.dataset.version = body.version;
    const sign = document.getElementById("sign-version");
    if (sign) sign.value = body.version;
    const before = li.dataset.label;
    li.dataset.label = label;
    document.querySelector('section.group[data-group="' + label + '"] ul.cells').append(li);
    li.querySelector("button.pick").setAttribute("aria-label",
      "cell " + li.dataset.cell + ": " + label + " (was " + before + ")");
    updateCounts(body.differential);
    select(li);
    root.dataset.lastChangeMs = (performance.now() - started).toFixed(1);
    notice("Cell " + li.dataset.cell + " is now " + label + " (was " + before + "). Saved.");
  }

  document.addEventListener("keydown", (event) => {
    const tag = event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "ArrowDown" || event.key === "ArrowRight" || event.key === "j") {
      move(1);
    } else if (event.key === "ArrowUp" || event.key === "ArrowLeft" || event.key === "k") {
      move(-1);
    } else if (KEYS[event.key]) {
      setLabel(selected, KEYS[event.key]);
    } else {
      return;
    }
    event.preventDefault();
  });
  document.getElementById("gallery").addEventListener("click", (event) => {
    const li = event.target.closest("li.cell");
    if (li) select(li);
  });
  document.querySelectorAll("button.set-label").forEach((button) => {
    button.addEventListener("click", () => setLabel(selected, button.dataset.label));
  });

  // the first cell to review: the first flagged one, else the first
  select(document.querySelector("li.cell.flagged") || cells()[0]);
  if (!selected) root.focus();
  const images = Array.from(document.querySelectorAll("#gallery img"));
  Promise.all(images.map((img) => img.complete ? Promise.resolve() :
    new Promise((done) => { img.addEventListener("load", done); img.addEventListener("error", done); })))
    .then(() => { root.dataset.readyMs = performance.now().toFixed(1); });
})();
