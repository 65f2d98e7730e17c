// The names people type, in the spelling the matrix uses (for the search and filter boxes):
// `F.softmax`, `torch.nn.functional.softmax` -> `nn.functional.softmax`; `torch.add`, `torch.Tensor.add`
// -> `add`; `aten::_softmax`, `aten._softmax.default`, `torch.ops.aten.index_put_` -> `_softmax`,
// `index_put`; a trailing in-place `_` and `.out` dropped (`add_` -> `add`; `__add__` stays).
// Both what is typed and the names searched are normalised, so they meet in one spelling.
var opsuiteNames = (function () {
  "use strict";
  const ATEN = /^(?:torch\.ops\.aten\.|aten::|aten\.)/;
  function normalise(text) {
    let name = text.trim().replace(/\(.*$/, "").toLowerCase();  // `F.softmax(x, dim=1)`: the name
    if (ATEN.test(name)) {
      name = name.replace(ATEN, "").split(".")[0];  // the overload goes: all overloads of the packet
    } else {
      name = name.replace(/^(?:torch\.nn\.functional|f)\./, "nn.functional.")
        .replace(/^torch\.(?:tensor\.)?/, "").replace(/\.(?:out|default)$/, "");
    }
    return name.endsWith("_") && !name.endsWith("__") ? name.slice(0, -1) : name;
  }
  // What a query is matched as: the name, and its last dotted part (`nn.functional.softmax` finds
  // OpInfo's `softmax`).
  function candidates(text) {
    const name = normalise(text);
    const last = name.slice(name.lastIndexOf(".") + 1);
    return last && last !== name ? [name, last] : [name];
  }
  // How well a query matches names (most telling first): 0 for an exact match of the first name, then
  // prefix and substring matches, later names and the last-part candidate ranking lower; -1 for none.
  function rank(queries, names) {
    let best = -1;
    names.forEach((name, i) => queries.forEach((query, j) => {
      const how = name === query ? 0 : name.startsWith(query) ? 1 : name.includes(query) ? 2 : -1;
      if (how < 0) return;
      const score = how * 10000 + i * 2 + j;
      if (best < 0 || score < best) best = score;
    }));
    return best;
  }
  return {normalise, candidates, rank};
})();
