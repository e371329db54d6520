// FreqAI models: versions with metrics and live training progress; deploy to a bot, roll back.
import { api, subscribe } from "../api.js";
import { clear, h, percent } from "../dom.js";

function leaves(value, prefix = "") {
  // "key.sub value" for every number in a nested object of metrics (label names can be long: the last part only)
  if (typeof value === "number") return [`${prefix} ${Number(value.toPrecision(4))}`];
  if (!value || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([k, v]) => leaves(v, typeof v === "number" ? k : prefix));
}

export async function renderModels(view) {
  const table = h("div", { id: "models-list" });
  const outcome = h("p", { id: "model-outcome", role: "status" });

  async function deploy(modelId, botId) {
    try {
      const answer = await api(`/api/v1/bots/${botId}/model`, { method: "POST", body: { model_id: modelId } });
      clear(outcome, `Deploy: ${answer.deployment.state}${answer.notice ? ` — ${answer.notice}` : ""}`);
    } catch (error) {
      clear(outcome, `Deploy refused: ${error.message}`);
    }
  }

  async function rollback(botId) {
    try {
      const answer = await api(`/api/v1/bots/${botId}/model/rollback`, { method: "POST" });
      clear(outcome, `Rollback: ${answer.deployment.state}`);
    } catch (error) {
      clear(outcome, `Rollback refused: ${error.message}`);
    }
  }

  let models = [];
  let bots = [];

  async function load() {
    const [listed, fleet] = await Promise.all([api("/api/v1/models?limit=200"), api("/api/v1/dashboard/fleet")]);
    models = listed;
    bots = fleet.bots;
    draw();
  }

  function row(m) {
    const pick = h("select", { "aria-label": "bot" }, bots.map((b) => h("option", { value: b.id }, b.name)));
    const progress = m.progress && m.status !== "succeeded" ? ` ${m.progress.step || ""} ${percent(m.progress.fraction ?? null)}` : "";
    const metrics = m.metrics
      ? Object.entries(m.metrics)
          .slice(0, 3)
          .map(([pair, values]) => `${pair}: ${leaves(values).slice(0, 4).join(", ")}`)
          .join(" · ")
      : "—";
    return h(
      "tr",
      { dataset: { model: m.id } },
      h("td", {}, `${m.name} v${m.version}`, h("br"), h("small", { class: "muted" }, m.freqai_model)),
      h("td", {}, h("span", { class: `badge model-${m.status}` }, m.status), progress),
      h("td", {}, m.pairs.join(", ")),
      h("td", {}, metrics),
      h("td", {}, bots.length ? pick : "no bots"),
      h(
        "td",
        {},
        m.status === "succeeded" && bots.length ? h("button", { type: "button", onclick: () => deploy(m.id, pick.value) }, "deploy") : null,
        bots.length ? h("button", { type: "button", class: "quiet", onclick: () => rollback(pick.value) }, "roll back") : null,
      ),
    );
  }

  function draw() {
    if (!models.length) {
      clear(table, h("p", { class: "muted" }, "No models yet: train one (POST /api/v1/models/train, or freqfleet models train) or upload a bundle."));
      return;
    }
    clear(
      table,
      h(
        "table",
        { class: "wrap" },
        h("thead", {}, h("tr", {}, ["Model", "Status", "Pairs", "Metrics", "Deploy to", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, models.map(row)),
      ),
    );
  }

  clear(view, h("h1", {}, "Models"), outcome, table);
  await load();
  // Pushed: a version queued, its training's progress (the worker's), its result, a deletion.
  return subscribe("/api/v1/dashboard/live", (type, data) => {
    if (type === "model") {
      const at = models.findIndex((m) => m.id === data.id);
      const shown = table.querySelector(`tr[data-model="${CSS.escape(data.id)}"]`);
      if (at >= 0 && shown) {
        models[at] = data;
        shown.replaceWith(row(data)); // only its row: a bot picked in another row stays picked
      } else {
        models = [data, ...models.filter((m) => m.id !== data.id)]; // newest first
        draw();
      }
    } else if (type === "model_gone") {
      models = models.filter((m) => m.id !== data.id);
      draw();
    }
  });
}
