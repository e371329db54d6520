// Strategies: upload (the lint's problems at their lines), review (admins), the backtest check's result.
import { ApiError, api } from "../api.js";
import { clear, h } from "../dom.js";

export async function renderStrategies(view, { admin }) {
  const list = h("div", { id: "strategies" });
  const problems = h("div", { id: "upload-problems", role: "alert" });
  const form = h(
    "form",
    { class: "card", id: "upload" },
    h("h3", {}, "Upload a strategy"),
    h("label", {}, "Name", h("input", { name: "name", required: true, maxlength: 100 })),
    h("label", {}, "Source (a Freqtrade IStrategy)", h("textarea", { name: "source", rows: 10, required: true, spellcheck: "false" })),
    h("button", { type: "submit" }, "Upload"),
    problems,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const source = String(data.get("source"));
    try {
      await api("/api/v1/strategies", { method: "POST", body: { name: String(data.get("name")), source } });
      clear(problems, h("p", {}, "Uploaded."));
      form.reset();
      await load();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      const lines = source.split("\n");
      const found = (error.body && error.body.errors) || [];
      clear(
        problems,
        h("p", { class: "error" }, error.message),
        found.map((p) => h("div", { class: "problem" }, h("strong", {}, `line ${p.line}: ${p.message}`), h("pre", {}, lines[p.line - 1] ?? ""))),
      );
    }
  });

  async function review(id, verdict) {
    await api(`/api/v1/strategies/${id}/${verdict}`, { method: "POST", body: {} });
    await load();
  }

  async function load() {
    const strategies = await api("/api/v1/strategies?limit=200");
    clear(
      list,
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Name", "Class", "Review", "Backtest check", ""].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          strategies.map((s) =>
            h(
              "tr",
              { dataset: { strategy: s.id } },
              h("td", {}, s.name),
              h("td", {}, s.class_name),
              h("td", {}, h("span", { class: `badge review-${s.status}` }, s.status), s.review_note ? ` — ${s.review_note}` : ""),
              h("td", {}, s.check_status, s.check_result && s.check_result.reason ? ` — ${s.check_result.reason}` : ""),
              h(
                "td",
                {},
                admin && s.status !== "approved" ? h("button", { type: "button", onclick: () => review(s.id, "approve") }, "approve") : null,
                admin && s.status !== "rejected" ? h("button", { type: "button", class: "quiet", onclick: () => review(s.id, "reject") }, "reject") : null,
              ),
            ),
          ),
        ),
      ),
    );
  }

  clear(view, h("h1", {}, "Strategies"), form, list);
  await load();
  return null;
}
