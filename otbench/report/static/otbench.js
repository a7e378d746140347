/* otbench leaderboard: sortable tables and the eps selector. Shipped with otbench (MIT, see LICENSE); no network. */
(function () {
  "use strict";

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell ? (cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent) : "";
    if (!numeric) return raw.trim().toLowerCase();
    var x = parseFloat(raw);
    return isNaN(x) ? null : x;
  }

  function sortTable(table, index, numeric, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { r._order = i; });
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      if (x === null || y === null) {  // missing values last, whatever the direction
        if (x === y) return a._order - b._order;
        return x === null ? 1 : -1;
      }
      var c = x < y ? -1 : x > y ? 1 : 0;
      return (descending ? -c : c) || a._order - b._order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function makeSortable(table) {
    var headers = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(headers, function (th, index) {
      th.setAttribute("tabindex", "0");
      th.title = "sort by " + th.textContent;
      function go() {
        var numeric = th.getAttribute("data-type") === "num";
        // first click: numbers largest first, text A-Z; each further click reverses
        var current = th.getAttribute("aria-sort");
        var descending = current ? current === "ascending" : numeric;
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        sortTable(table, index, numeric, descending);
      }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
    });
  }

  function selectBoard(selector, id) {
    Array.prototype.forEach.call(selector.querySelectorAll("button[data-board]"), function (b) {
      var on = b.getAttribute("data-board") === id;
      b.setAttribute("aria-selected", on ? "true" : "false");
      var board = document.getElementById(b.getAttribute("data-board"));
      if (board) board.hidden = !on;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
    Array.prototype.forEach.call(document.querySelectorAll(".eps-selector"), function (selector) {
      var first = selector.querySelector("button[aria-selected='true']") || selector.querySelector("button");
      selector.addEventListener("click", function (e) {
        var b = e.target.closest("button[data-board]");
        if (b) selectBoard(selector, b.getAttribute("data-board"));
      });
      if (first) selectBoard(selector, first.getAttribute("data-board"));
    });
    document.documentElement.setAttribute("data-ready", "true");
  });
})();
