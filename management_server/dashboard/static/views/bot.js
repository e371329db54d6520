// One bot: its state (live), charts, trades, logs, configuration, models and the buttons that drive it.
import { ApiError, api, subscribe } from "../api.js";
import { age, badge, clear, h, money, percent } from "../dom.js";

const ACTIONS = ["start", "pause", "resume", "restart", "stop"];
const PAGE = 20;

function chart(target, title, xs, series, labels = null) {
  // A line over time, or (with labels) bars, one per label.
  clear(target, h("h3", {}, title));
  if (!xs.length) {
    target.append(h("p", { class: "muted" }, "No closed trades yet."));
    return;
  }
  if (typeof window.uPlot !== "function") {
    target.append(h("p", { class: "muted" }, "The chart library did not load."));
    return;
  }
  const width = Math.max(280, Math.min(target.clientWidth || 640, 900));
  const bars = labels !== null;
  const x = bars
    ? { time: false, range: () => [-0.5, xs.length - 0.5] }
    : { time: true, range: (u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) };
  const xAxis = bars
    ? { splits: () => xs, values: (u, splits) => splits.map((i) => labels[i] ?? "") }
    : {};
  new window.uPlot(
    {
      width,
      height: 220,
      legend: { show: false },
      scales: { x },
      series: [
        {},
        {
          label: title,
          stroke: "#2f7de1",
          fill: bars ? "rgba(47,125,225,0.35)" : "rgba(47,125,225,0.08)",
          width: 2,
          paths: bars ? window.uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
          points: { show: !bars },
        },
      ],
      axes: [xAxis, { size: 70 }],
    },
    [xs, series],
    target,
  );
  target.dataset.points = String(xs.length);
}

export async function renderBot(view, botId) {
  let bot = await api(`/api/v1/bots/${botId}`);
  let offset = 0;
  const title = h("h1", {}, bot.name);
  const stateLine = h("p", { id: "bot-state" });
  const outcome = h("p", { id: "action-outcome", role: "status", "aria-live": "polite" });
  const buttons = h(
    "div",
    { class: "actions" },
    ACTIONS.map((action) => h("button", { type: "button", dataset: { action }, onclick: () => act(action) }, action)),
    h("button", { type: "button", class: "danger", dataset: { action: "forceexit-all" }, onclick: () => forceExit("all") }, "force-exit all"),
  );
  const equity = h("section", { class: "card chart", id: "equity" });
  const daily = h("section", { class: "card chart", id: "daily" });
  const openTrades = h("section", { class: "card", id: "open-trades" });
  const closedTrades = h("section", { class: "card", id: "closed-trades" });
  const logs = h("section", { class: "card", id: "logs" });
  const config = h("section", { class: "card", id: "config" });
  const models = h("section", { class: "card", id: "models" });
  const edit = h(
    "form",
    { class: "card", id: "live-edit" },
    h("h3", {}, "Change while it runs"),
    h("label", {}, "Pairs (comma-separated)", h("input", { name: "pairs", value: bot.pairs.join(", ") })),
    h("label", {}, "Stake amount", h("input", { name: "stake_amount", value: bot.stake_amount })),
    h("label", {}, "Max open trades", h("input", { name: "max_open_trades", type: "number", min: -1, value: bot.max_open_trades })),
    h("button", { type: "submit" }, "Save"),
  );
  edit.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(edit);
    const body = {
      pairs: String(data.get("pairs")).split(",").map((p) => p.trim()).filter(Boolean),
      stake_amount: String(data.get("stake_amount")).trim(),
      max_open_trades: Number(data.get("max_open_trades")),
    };
    try {
      bot = await api(`/api/v1/bots/${botId}`, { method: "PATCH", body });
      say("saved", "Saved: the bot takes the new settings without a restart.");
      drawState();
    } catch (error) {
      say("rejected", `Refused: ${error.message}`);
    }
  });

  function say(kind, text) {
    outcome.dataset.outcome = kind;
    clear(outcome, text);
  }

  async function act(action) {
    say("sending", `${action}: sending…`);
    try {
      const answer = await api(`/api/v1/bots/${botId}/${action}`, { method: "POST" });
      bot = answer;
      say("accepted", `${action}: accepted (command ${answer.command_id.slice(0, 8)})${answer.notice ? ` — ${answer.notice}` : ""}`);
      drawState();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      say("rejected", `${action}: rejected — ${error.message}`);
    }
  }

  async function forceExit(tradeId) {
    if (!window.confirm(tradeId === "all" ? "Exit every open trade of this bot at market?" : `Exit trade ${tradeId} at market?`)) return;
    try {
      await api(`/api/v1/bots/${botId}/forceexit`, { method: "POST", body: { trade_id: tradeId } });
      say("accepted", `force-exit ${tradeId}: accepted`);
    } catch (error) {
      say("rejected", `force-exit ${tradeId}: rejected — ${error.message}`);
    }
  }

  function drawState(live) {
    clear(
      stateLine,
      badge(bot.actual_state),
      ` wanted: ${bot.desired_state}`,
      bot.gateway_id ? ` · gateway ${bot.gateway_id}` : "",
      live && live.updated_at ? ` · last report ${age(live.updated_at)}` : "",
      bot.last_error ? h("span", { class: "error" }, ` · ${bot.last_error}`) : "",
    );
    stateLine.dataset.state = bot.actual_state;
  }

  async function loadStatus() {
    const live = await api(`/api/v1/bots/${botId}/status`);
    drawState(live);
    const rows = live.open_trades.map((t) =>
      h(
        "tr",
        { dataset: { trade: t.trade_id } },
        h("td", {}, t.trade_id),
        h("td", {}, t.pair),
        h("td", { class: "num" }, t.open_rate),
        h("td", { class: `num ${t.profit_ratio < 0 ? "loss" : ""}` }, percent(t.profit_ratio)),
        h("td", { class: "num" }, money(t.profit_abs)),
        h("td", {}, h("button", { type: "button", class: "quiet", onclick: () => forceExit(t.trade_id) }, "exit")),
      ),
    );
    clear(
      openTrades,
      h("h3", {}, `Open trades (${rows.length})`),
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["id", "pair", "open rate", "profit %", "profit", ""].map((c) => h("th", {}, c)))), h("tbody", {}, rows))
        : h("p", { class: "muted" }, "None."),
    );
  }

  async function loadTrades() {
    const trades = await api(`/api/v1/bots/${botId}/trades?limit=${PAGE}&offset=${offset}`);
    const pager = h(
      "div",
      { class: "pager" },
      h("button", { type: "button", class: "quiet", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); loadTrades(); } }, "newer"),
      h("button", { type: "button", class: "quiet", disabled: trades.length < PAGE, onclick: () => { offset += PAGE; loadTrades(); } }, "older"),
    );
    clear(
      closedTrades,
      h("h3", {}, "Trades"),
      trades.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["id", "pair", "opened", "closed", "profit %", "profit", "exit"].map((c) => h("th", {}, c)))),
            h(
              "tbody",
              {},
              trades.map((t) =>
                h(
                  "tr",
                  {},
                  h("td", {}, t.trade_id),
                  h("td", {}, t.pair),
                  h("td", {}, t.open_date.replace("T", " ").slice(0, 16)),
                  h("td", {}, t.close_date ? t.close_date.replace("T", " ").slice(0, 16) : "open"),
                  h("td", { class: `num ${t.profit_ratio < 0 ? "loss" : ""}` }, percent(t.profit_ratio)),
                  h("td", { class: "num" }, money(t.profit_abs)),
                  h("td", {}, t.exit_reason || ""),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No trades yet."),
      pager,
    );
  }

  async function loadAnalytics() {
    const figures = await api(`/api/v1/analytics/bots/${botId}`);
    const points = figures.equity_curve || [];
    chart(equity, "Equity (cumulative profit per closed trade)", points.map((p) => Date.parse(p.date) / 1000), points.map((p) => p.profit_abs));
    const days = figures.daily || [];
    chart(daily, "Daily profit", days.map((d, i) => i), days.map((d) => d.profit_abs), days.map((d) => d.date.slice(5)));
  }

  // The log: the last lines, then followed (a stream of each new line, GET .../logs?follow=true) while the
  // page is open; a bot that is not running says why, and its log is followed again once it runs.
  const logLines = h("pre", { class: "logs", id: "log-lines" });
  const LOG_KEEP = 500;

  function showLog(message) {
    clear(logs, h("h3", {}, "Log"), message ? h("p", { class: "muted" }, message) : logLines);
  }

  function logLine(text, note = false) {
    const atEnd = logLines.scrollTop + logLines.clientHeight >= logLines.scrollHeight - 4;
    logLines.append(note ? h("span", { class: "muted" }, `${text}\n`) : `${text}\n`);
    while (logLines.childNodes.length > LOG_KEEP) logLines.firstChild.remove();
    if (atEnd) logLines.scrollTop = logLines.scrollHeight; // the newest lines in view, unless read higher up
  }

  async function loadLogs() {
    try {
      const answer = await api(`/api/v1/bots/${botId}/logs?lines=50`);
      logLines.replaceChildren();
      answer.lines.forEach((line) => logLine(line));
      showLog();
    } catch (error) {
      if (error.status === 401) throw error;
      showLog(error.message);
    }
  }

  function followLogs() {
    return subscribe(
      `/api/v1/bots/${botId}/logs?lines=50&follow=true`,
      (type, data) => {
        if (type === "line") logLine(data.line);
        else if (type === "gap" || type === "error") logLine(`… ${data.message}`, true);
      },
      () => {
        logLines.replaceChildren(); // each stream starts with the last lines
        showLog();
      },
    );
  }

  async function loadModels() {
    try {
      const answer = await api(`/api/v1/bots/${botId}/model`);
      clear(
        models,
        h("h3", {}, "Models"),
        answer.history.length
          ? h("ul", {}, answer.history.map((d) => h("li", {}, `${d.requested_at.slice(0, 16).replace("T", " ")} ${d.action} ${d.model_id} — ${d.state}${d.reason ? ` (${d.reason})` : ""}`)))
          : h("p", { class: "muted" }, "No model deployed."),
      );
    } catch (error) {
      if (error.status === 401) throw error;
      clear(models, h("h3", {}, "Models"), h("p", { class: "muted" }, error.message));
    }
  }

  clear(config, h("h3", {}, "Configuration"), h("pre", {}, JSON.stringify(bot, null, 2)));
  clear(
    view,
    h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")),
    title,
    stateLine,
    buttons,
    outcome,
    h("div", { class: "grid" }, equity, daily),
    openTrades,
    closedTrades,
    edit,
    h("div", { class: "grid" }, logs, models),
    config,
  );
  drawState();
  await Promise.all([loadStatus(), loadTrades(), loadAnalytics(), loadLogs(), loadModels()].map((p) => p.catch((e) => {
    if (e.status === 401) throw e;
  })));
  const stop = subscribe("/api/v1/dashboard/live", async (type, data) => {
    if (type !== "bot" || data.id !== botId) return;
    bot = { ...bot, ...data };
    drawState();
    await Promise.all([loadStatus(), loadTrades(), loadAnalytics()]).catch(() => null);
  });
  const stopLogs = followLogs();
  return () => {
    stop();
    stopLogs();
  };
}
