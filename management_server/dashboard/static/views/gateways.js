// Gateways (admins): where bots run, their load and last heartbeat.
import { api } from "../api.js";
import { age, clear, h } from "../dom.js";

function load(figures) {
  if (!figures) return "—";
  const parts = [];
  if (figures.cpu_percent !== undefined) parts.push(`CPU ${figures.cpu_percent.toFixed(0)} %${figures.cpu_count ? ` of ${figures.cpu_count}` : ""}`);
  if (figures.memory_percent !== undefined) parts.push(`memory ${figures.memory_percent.toFixed(0)} %`);
  return parts.join(" · ") || "—";
}

// What the gateway's market-data relay says of the host's IP at each exchange: weight this minute against the
// limit, the share of bots' requests answered from its cache, and a refusal of the exchange it is waiting out.
function market(figures) {
  const exchanges = figures?.relay?.exchanges;
  if (!exchanges || !Object.keys(exchanges).length) return "—";
  return Object.entries(exchanges)
    .map(([name, e]) => {
      const n = (x) => Number(x).toLocaleString("en-US");
      const parts = [`${name}: ${n(e.used_weight_1m)} of ${n(e.limit)} weight/min`];
      if (e.requests) parts.push(`${Math.round((100 * e.hits) / e.requests)} % from cache`);
      if (e.blocked_status) parts.push(`exchange said ${e.blocked_status}: waiting ${e.blocked_for_seconds} s`);
      return parts.join(" · ");
    })
    .join("; ");
}

export async function renderGateways(view) {
  const gateways = await api("/api/v1/gateways");
  clear(
    view,
    h("h1", {}, "Gateways"),
    h(
      "table",
      { id: "gateways" },
      h("thead", {}, h("tr", {}, ["Gateway", "Status", "Host", "Bots / capacity", "Load", "Market data", "Last heartbeat", "Version"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        gateways.map((g) =>
          h(
            "tr",
            { dataset: { gateway: g.gateway_id } },
            h("td", {}, g.gateway_id),
            h("td", {}, h("span", { class: `badge ${g.live ? "state-running" : "state-stopped"}` }, g.live ? "live" : g.status)),
            h("td", {}, g.host || "—"),
            h("td", { class: "num" }, `${g.bots_running} / ${g.capacity}`),
            h("td", { class: "load" }, load(g.load)),
            h("td", { class: "market" }, market(g.load)),
            h("td", {}, age(g.last_seen_at)),
            h("td", {}, g.version || "—"),
          ),
        ),
      ),
    ),
  );
  return null;
}
