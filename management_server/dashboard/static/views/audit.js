// Audit (admins): who did what, when, from where; search by who, action, outcome and time.
import { api } from "../api.js";
import { clear, h } from "../dom.js";

export async function renderAudit(view) {
  const results = h("div", { id: "audit-results" });
  const users = await api("/api/v1/users?limit=500").catch(() => ({ items: [] }));
  const form = h(
    "form",
    { class: "filters", id: "audit-search" },
    h(
      "select",
      { name: "actor_id", "aria-label": "who" },
      h("option", { value: "" }, "anyone"),
      users.items.map((u) => h("option", { value: u.id }, u.email)),
    ),
    h("input", { name: "action", placeholder: "action, e.g. bot.pause", "aria-label": "action" }),
    h("select", { name: "outcome", "aria-label": "outcome" }, ["", "requested", "accepted", "done", "success", "failure", "denied", "refused"].map((o) => h("option", { value: o }, o || "any outcome"))),
    h("input", { name: "since", type: "datetime-local", "aria-label": "since" }),
    h("input", { name: "until", type: "datetime-local", "aria-label": "until" }),
    h("button", { type: "submit" }, "Search"),
  );
  async function search(before) {
    const data = new FormData(form);
    const query = new URLSearchParams({ limit: "100" });
    if (data.get("actor_id")) query.set("actor_id", String(data.get("actor_id")));
    if (data.get("action")) query.set("action", String(data.get("action")));
    if (data.get("outcome")) query.set("outcome", String(data.get("outcome")));
    if (data.get("since")) query.set("since", new Date(String(data.get("since"))).toISOString());
    if (data.get("until")) query.set("until", new Date(String(data.get("until"))).toISOString());
    if (before) query.set("before_id", String(before));
    const page = await api(`/api/v1/audit?${query}`);
    clear(
      results,
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Target", "Outcome", "Reason"].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          page.items.map((e) =>
            h(
              "tr",
              {},
              h("td", {}, e.occurred_at.replace("T", " ").slice(0, 19)),
              h("td", {}, e.actor, h("small", { class: "muted" }, ` ${e.via}`)),
              h("td", {}, e.action),
              h("td", {}, e.target_type ? `${e.target_type} ${e.target_id || ""}` : ""),
              h("td", {}, e.outcome),
              h("td", {}, e.reason || ""),
            ),
          ),
        ),
      ),
      page.next_before_id ? h("button", { type: "button", class: "quiet", onclick: () => search(page.next_before_id) }, "older") : null,
    );
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  clear(view, h("h1", {}, "Audit"), form, results);
  await search();
  return null;
}
