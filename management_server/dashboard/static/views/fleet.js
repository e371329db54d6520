// Every bot the caller may see, one row each, kept up to date by the live feed.
import { api, subscribe } from "../api.js";
import { age, badge, clear, h, money, percent } from "../dom.js";

const COLUMNS = [
  { key: "name", title: "Bot" },
  { key: "owner", title: "Owner", admin: true },
  { key: "gateway_id", title: "Gateway" },
  { key: "actual_state", title: "State" },
  { key: "pairs", title: "Pairs" },
  { key: "open_trades", title: "Open", number: true },
  { key: "profit_abs", title: "Profit", number: true },
  { key: "profit_ratio", title: "Profit %", number: true },
  { key: "drawdown_ratio", title: "Drawdown", number: true },
  { key: "problems", title: "Problems", number: true },
];

function problems(bot) {
  return bot.errors.length + bot.warnings.length;
}

const DRY_RUN_WALLET = 1000; // Freqtrade's dry_run_wallet when a bot's config names none

function balance(bot) {
  // A dry-run bot's simulated wallet and its profit; a live bot's balance is the exchange's (not reported here).
  if (!bot.dry_run) return null;
  return (bot.dry_run_wallet === null ? DRY_RUN_WALLET : Number(bot.dry_run_wallet)) + (bot.profit_abs || 0);
}

export async function renderFleet(view, { admin }) {
  const bots = new Map();
  const state = { sort: "name", descending: false };
  const filters = {};
  const search = h("input", { type: "search", placeholder: "Search name or pair", id: "fleet-search", "aria-label": "Search" });
  const selects = {};
  const body = h("tbody", { id: "fleet-rows" });
  const totals = h("div", { id: "fleet-totals", class: "totals" });
  const head = h(
    "tr",
    {},
    COLUMNS.filter((c) => !c.admin || admin).map((c) =>
      h("th", { scope: "col", class: c.number ? "num" : "", dataset: { key: c.key } }, h("button", { type: "button", class: "sort" }, c.title)),
    ),
  );
  head.addEventListener("click", (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    state.descending = state.sort === th.dataset.key ? !state.descending : false;
    state.sort = th.dataset.key;
    draw();
  });

  function filter(name, label) {
    const select = h("select", { "aria-label": label, dataset: { filter: name } }, h("option", { value: "" }, `${label}: all`));
    select.addEventListener("change", () => {
      filters[name] = select.value;
      draw();
    });
    selects[name] = select;
    return select;
  }

  function refreshFilterChoices() {
    for (const [name, select] of Object.entries(selects)) {
      const present = [...new Set([...bots.values()].map((b) => choiceOf(name, b)).filter(Boolean))].sort();
      const chosen = select.value;
      clear(select, select.options[0], present.map((v) => h("option", { value: v, selected: v === chosen }, v)));
    }
  }

  function choiceOf(name, bot) {
    if (name === "mode") return bot.dry_run ? "dry run" : "live";
    if (name === "state") return bot.actual_state;
    if (name === "owner") return bot.owner;
    if (name === "gateway") return bot.gateway_id || "none";
    if (name === "currency") return bot.stake_currency;
    return "";
  }

  function shown() {
    const needle = search.value.trim().toLowerCase();
    const rows = [...bots.values()].filter((bot) => {
      for (const [name, value] of Object.entries(filters)) if (value && choiceOf(name, bot) !== value) return false;
      if (!needle) return true;
      return bot.name.toLowerCase().includes(needle) || bot.pairs.some((p) => p.toLowerCase().includes(needle));
    });
    const key = state.sort;
    const value = (b) => (key === "problems" ? problems(b) : key === "pairs" ? b.pairs.join(",") : b[key]);
    rows.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (state.descending ? -1 : 1);
    });
    return rows;
  }

  function row(bot) {
    const issues = [...bot.errors.map((e) => `error: ${e}`), ...bot.warnings.map((w) => `warning: ${w}`)];
    const cells = [
      h("td", {}, h("a", { href: `#/bots/${bot.id}`, class: "bot-name" }, bot.name), bot.dry_run ? "" : h("span", { class: "live-tag" }, "live")),
      admin ? h("td", {}, bot.owner) : null,
      h("td", {}, bot.gateway_id || "—"),
      h("td", {}, badge(bot.actual_state), h("small", { class: "muted age", title: "last report" }, ` ${age(bot.last_status_at)}`)),
      h("td", { class: "pairs" }, bot.pairs.join(", ")),
      h("td", { class: "num" }, bot.open_trades),
      h("td", { class: `num ${bot.profit_abs < 0 ? "loss" : ""}` }, money(bot.profit_abs, bot.stake_currency)),
      h("td", { class: `num ${bot.profit_ratio < 0 ? "loss" : ""}` }, percent(bot.profit_ratio)),
      h("td", { class: "num" }, percent(bot.drawdown_ratio)),
      h("td", { class: "num", title: issues.join("\n") }, issues.length ? h("span", { class: bot.errors.length ? "badge bad" : "badge warn" }, issues.length) : "0"),
    ];
    return h("tr", { dataset: { bot: bot.id, state: bot.actual_state } }, cells);
  }

  function draw() {
    const rows = shown();
    clear(body, rows.length ? rows.map(row) : h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, "No bots.")));
    const byCurrency = new Map();
    for (const bot of rows) {
      const t = byCurrency.get(bot.stake_currency) || { balance: 0, hasBalance: false, profit: 0, open: 0 };
      const b = balance(bot);
      if (b !== null) {
        t.balance += b;
        t.hasBalance = true;
      }
      t.profit += bot.profit_abs || 0;
      t.open += bot.open_trades;
      byCurrency.set(bot.stake_currency, t);
    }
    clear(
      totals,
      h("span", {}, `${rows.length} of ${bots.size} bots`),
      [...byCurrency].map(([currency, t]) =>
        h(
          "span",
          { class: "total", dataset: { currency } },
          `${currency}: balance ${t.hasBalance ? money(t.balance) : "—"}, profit ${money(t.profit)}, open trades ${t.open}`,
        ),
      ),
    );
  }

  search.addEventListener("input", draw);
  const answer = await api("/api/v1/dashboard/fleet");
  for (const bot of answer.bots) bots.set(bot.id, bot);
  clear(
    view,
    h("h1", {}, "Fleet"),
    h(
      "div",
      { class: "filters" },
      search,
      filter("state", "State"),
      filter("mode", "Mode"),
      admin ? filter("owner", "User") : null,
      filter("gateway", "Gateway"),
      filter("currency", "Currency"),
    ),
    totals,
    h("div", { class: "scroll" }, h("table", { id: "fleet" }, h("thead", {}, head), body)),
  );
  refreshFilterChoices();
  draw();
  const ticker = setInterval(() => {
    for (const el of body.querySelectorAll("tr[data-bot]")) {
      const bot = bots.get(el.dataset.bot);
      const small = el.querySelector(".age");
      if (bot && small) small.textContent = ` ${age(bot.last_status_at)}`;
    }
  }, 5000);
  const stop = subscribe("/api/v1/dashboard/live", (type, data) => {
    if (type === "bot") bots.set(data.id, data);
    else if (type === "gone") bots.delete(data.id);
    else return;
    refreshFilterChoices();
    draw();
  });
  return () => {
    clearInterval(ticker);
    stop();
  };
}
