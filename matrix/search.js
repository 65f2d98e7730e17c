// The index page's search: a row per op, block or model, a column per stack (search-data.js, written by
// render_html.search_data), filtered and ranked by what is typed (names.js). Rows are built when first
// shown and kept, so a keystroke only ranks names and swaps rows. The query lives in the URL fragment
// (#q=softmax) so a search can be linked. Texts are set with textContent, never parsed as HTML.
(function () {
  "use strict";
  const data = window.OPSUITE_SEARCH;
  const statuses = data.statuses, stacks = data.stacks;
  const FIRST = 30;  // rows shown before "show all" (over two screens): a keystroke stays fast however many match
  const BATCH = 100;  // rows appended a frame past the first ones
  const SUBJECT_WIDTH = 16, STACK_WIDTH = 10;  // em: a fixed layout, so a keystroke never measures every cell
  const subjects = data.subjects.map(([subject, names, entries]) => ({
    subject, entries, names: names.map(opsuiteNames.normalise),
    text: names.map(opsuiteNames.normalise).join("\n"),  // one test rules most subjects out
    working: entries.every((e) => !e || statuses[e[0]] === "pass" || statuses[e[0]] === "skip"),
  }));
  const input = document.getElementById("q");
  const failingOnly = document.getElementById("failing");
  const body = document.querySelector("#search tbody");
  const count = document.getElementById("matches");
  const more = document.getElementById("more");
  const built = new Map();
  let limit = FIRST;
  let generation = 0;  // of the rows being appended; a new search stops an older one's batches

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // A link into a snapshot page, or plain text where the stack's link failed the name check.
  function link(stack, caseId, text, className) {
    if (!stack.href) return el("span", className, text);
    const a = el("a", className, text);
    a.href = stack.href + "#" + encodeURIComponent(caseId).replace(/%2F/g, "/");
    return a;
  }
  // The same command as the snapshot page's (notes.repro_command): the first `samples` samples, in order.
  function repro(caseId, stack, samples) {
    return "opsuite repro " + caseId + " --backend " + stack.backend + (samples ? " --samples " + samples : "");
  }
  function error(ratio) {
    return ratio === null ? null : "err ×" + (ratio < 10 ? ratio.toPrecision(2) : ratio.toExponential(1));
  }

  function header() {
    const table = document.getElementById("search");
    const columns = el("colgroup");
    for (const width of [SUBJECT_WIDTH, ...stacks.map(() => STACK_WIDTH)]) {
      const col = el("col");
      col.style.width = width + "em";
      columns.append(col);
    }
    table.prepend(columns);
    // Wide enough for a case's details (notes, repro command) when there are few stacks.
    table.style.width = `max(${SUBJECT_WIDTH + STACK_WIDTH * stacks.length}em, min(100%, 80em))`;
    const top = document.querySelector("#search thead tr.backends");
    const versions = document.querySelector("#search thead tr.stacks");
    let group = null;
    for (const stack of stacks) {
      if (!group || group.dataset.backend !== stack.backend) {
        group = el("th", "backend", stack.backend);
        group.dataset.backend = stack.backend;
        group.colSpan = stacks.filter((s) => s.backend === stack.backend).length;
        top.append(group);
      }
      const th = el("th", "stack");
      const label = stack.href ? el("a", null, stack.short) : el("span", null, stack.short);
      if (stack.href) label.href = stack.href;
      label.title = stack.label;
      th.append(label);
      versions.append(th);
    }
  }

  function cell(subject, stack, entry) {
    if (!entry) return el("td", "cell none", "not run");
    const [status, passing, applicable, samples, ratio, since, uncertain, first] = entry;
    const name = statuses[status];
    const td = el("td", "cell t-" + name);
    const caseId = subject + "/" + first;
    const head = link(stack, caseId, name === "pass" ? "✓ pass" : name, "status s-" + name);
    const shown = entry[8].find(([key]) => key === first);
    head.title = repro(caseId, stack, shown ? shown[4] : null);
    td.append(head);
    if (applicable) td.append(el("span", "passing", passing + "/" + applicable));
    const figures = [samples === null ? null : samples + " samples", error(ratio)].filter(Boolean);
    if (figures.length) td.append(el("div", "figures", figures.join(" · ")));
    if (since) td.append(el("div", "since", "since " + (uncertain ? "≤ " : "") + since));
    return td;
  }

  function details(item) {
    const tr = el("tr", "details-row");
    const td = el("td");
    td.colSpan = stacks.length + 1;
    const table = el("table", "details-table");
    const head = el("tr");
    for (const title of ["stack", "case", "status", "samples", "notes", "repro"]) head.append(el("th", null, title));
    table.append(head);
    stacks.forEach((stack, i) => {
      const entry = item.entries[i];
      if (!entry) return;
      entry[8].forEach(([key, status, samples, note, reproSamples], j) => {
        const row = el("tr");
        if (j === 0) {
          const where = el("td", "stack-name", stack.backend + " · " + stack.short);
          where.title = stack.label;
          where.rowSpan = entry[8].length;
          row.append(where);
        }
        const caseId = item.subject + "/" + key;
        const name = statuses[status];
        const caseCell = el("td");
        caseCell.append(link(stack, caseId, key));
        const statusCell = el("td");
        statusCell.append(el("span", "status s-" + name, name));
        row.append(caseCell, statusCell, el("td", "num", samples === null ? "-" : String(samples)),
                   el("td", "note", note), el("td", null));
        row.lastChild.append(el("code", null, repro(caseId, stack, reproSamples)));
        table.append(row);
      });
    });
    td.append(table);
    tr.append(td);
    return tr;
  }

  function row(item) {
    let tr = built.get(item.subject);
    if (tr) return tr;
    tr = el("tr", "subject-row");
    const th = el("th", "subject");
    const [kind, name] = item.subject.split("/");
    const toggle = el("button", "toggle", name);
    toggle.type = "button";
    toggle.title = "show every dtype and direction, with notes and repro commands";
    toggle.setAttribute("aria-expanded", "false");
    toggle.addEventListener("click", () => {
      const open = tr.nextSibling && tr.nextSibling.classList.contains("details-row");
      if (open) tr.nextSibling.remove();
      else tr.after(details(item));
      toggle.setAttribute("aria-expanded", String(!open));
    });
    th.append(toggle, el("span", "kind", kind));
    tr.append(th);
    stacks.forEach((stack, i) => tr.append(cell(item.subject, stack, item.entries[i])));
    built.set(item.subject, tr);
    return tr;
  }

  function search() {
    const text = input.value.trim();
    const queries = text ? opsuiteNames.candidates(text) : null;
    const found = [];
    for (const item of subjects) {
      if (failingOnly.checked && item.working) continue;
      if (queries && !queries.some((query) => item.text.includes(query))) continue;
      const score = queries ? opsuiteNames.rank(queries, item.names) : 0;
      if (score >= 0) found.push([score, item]);
    }
    found.sort((a, b) => a[0] - b[0] || (a[1].subject < b[1].subject ? -1 : 1));
    const shown = found.slice(0, limit);
    for (const open of body.querySelectorAll("tr.details-row")) {  // details opened earlier close
      open.previousSibling.querySelector(".toggle").setAttribute("aria-expanded", "false");
      open.remove();
    }
    // Rows already in place stay (typing on mostly keeps the rows and their order): less to lay out.
    let next = body.firstChild;
    for (const [, item] of shown.slice(0, FIRST)) {
      const tr = row(item);
      if (tr === next) next = next.nextSibling;
      else body.insertBefore(tr, next);
    }
    while (next) {
      const after = next.nextSibling;
      next.remove();
      next = after;
    }
    // Past the first rows ("show all"), a batch a frame: the page answers while they come.
    const batches = ++generation;
    (function append(from) {
      if (batches !== generation || from >= shown.length) return;
      body.append(...shown.slice(from, from + BATCH).map(([, item]) => row(item)));
      requestAnimationFrame(() => append(from + BATCH));
    })(FIRST);
    count.textContent = found.length === shown.length ? String(found.length)
      : shown.length + " of " + found.length;
    more.hidden = found.length === shown.length;
    const state = new URLSearchParams();
    if (text) state.set("q", text);
    if (failingOnly.checked) state.set("failing", "1");
    history.replaceState(null, "", state.toString() ? "#" + state.toString() : location.pathname);
  }
  function fromFragment() {
    const state = new URLSearchParams(location.hash.slice(1));
    input.value = state.get("q") || "";
    failingOnly.checked = state.get("failing") === "1";
    limit = FIRST;
    search();
  }

  header();
  input.addEventListener("input", () => { limit = FIRST; search(); });
  failingOnly.addEventListener("change", () => { limit = FIRST; search(); });
  more.addEventListener("click", () => { limit = Infinity; search(); });
  document.getElementById("search-form").addEventListener("submit", (event) => event.preventDefault());
  window.addEventListener("hashchange", fromFragment);
  fromFragment();
})();
