// A snapshot page's filters: op (a name as people type it, matched against the subject and the aten
// overloads it dispatched; see names.js), status, dtype, direction. The state lives in the URL fragment
// (#op=softmax&status=pass) so a view can be linked; a fragment without `=` is a case's row (its id).
(function () {
  "use strict";
  const controls = {op: "f-op", status: "f-status", dtype: "f-dtype", direction: "f-direction"};
  const inputs = {};
  for (const [key, id] of Object.entries(controls)) inputs[key] = document.getElementById(id);
  const rows = Array.from(document.querySelectorAll("#cells tbody tr"), (row) => {
    const names = [row.dataset.subject.split("/")[1], ...row.dataset.aten.split(" ").filter(Boolean)];
    return {row, names: names.map(opsuiteNames.normalise)};
  });
  function apply(linkable) {
    const queries = inputs.op.value.trim() ? opsuiteNames.candidates(inputs.op.value) : null;
    let shown = 0;
    for (const {row, names} of rows) {
      const d = row.dataset;
      const ok = (!queries || opsuiteNames.rank(queries, names) >= 0)
        && (!inputs.status.value || d.status === inputs.status.value)
        && (!inputs.dtype.value || d.dtype === inputs.dtype.value)
        && (!inputs.direction.value || d.direction === inputs.direction.value);
      row.hidden = !ok;
      if (ok) shown++;
    }
    document.getElementById("shown").textContent = shown;
    if (!linkable) return;
    const state = new URLSearchParams();
    for (const [key, input] of Object.entries(inputs)) if (input.value) state.set(key, input.value);
    history.replaceState(null, "", state.toString() ? "#" + state.toString() : location.pathname);
  }
  function fromFragment() {
    const fragment = location.hash.slice(1);
    const state = new URLSearchParams(fragment.includes("=") ? fragment : "");
    for (const [key, input] of Object.entries(inputs)) input.value = state.get(key) || "";
    apply(fragment.includes("="));  // a row's anchor stays in the URL: the browser scrolls to it
  }
  for (const input of Object.values(inputs)) {
    input.addEventListener("input", () => apply(true));
    input.addEventListener("change", () => apply(true));
  }
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
  window.addEventListener("hashchange", fromFragment);  // a link to another view of this page
  fromFragment();
})();
