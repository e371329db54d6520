// The dashboard's shell: who is logged in, the pages (by the URL's fragment), the emergency stop.
import { api, currentUser, logOut, resume, whenSessionEnds } from "./api.js";
import { clear, h } from "./dom.js";
import { renderAudit } from "./views/audit.js";
import { renderBot } from "./views/bot.js";
import { renderFleet } from "./views/fleet.js";
import { renderGateways } from "./views/gateways.js";
import { renderLogin } from "./views/login.js";
import { renderModels } from "./views/models.js";
import { renderStrategies } from "./views/strategies.js";

const view = document.getElementById("view");
const PAGES = [
  { path: "fleet", title: "Fleet", render: renderFleet },
  { path: "strategies", title: "Strategies", render: renderStrategies },
  { path: "models", title: "Models", render: renderModels },
  { path: "gateways", title: "Gateways", render: renderGateways, admin: true },
  { path: "audit", title: "Audit", render: renderAudit, admin: true },
];

let leave = null; // what the current page stops when it is left (its live feed)
let loginMessage = "";

export const context = { botIds: [] }; // the bots the current page is about (the emergency stop's first choice)

function isAdmin() {
  const user = currentUser();
  return Boolean(user && user.role === "admin");
}

function showHeader() {
  const user = currentUser();
  document.getElementById("top").hidden = !user;
  if (!user) return;
  clear(
    document.getElementById("nav"),
    PAGES.filter((p) => !p.admin || isAdmin()).map((p) => h("a", { href: `#/${p.path}`, dataset: { page: p.path } }, p.title)),
  );
  clear(document.getElementById("who"), user.email);
}

async function route() {
  if (leave) {
    leave();
    leave = null;
  }
  context.botIds = [];
  const user = currentUser();
  const [, page, arg] = (location.hash || "#/fleet").split("/");
  if (!user || page === "login") {
    document.getElementById("top").hidden = true;
    renderLogin(view, loginMessage, async () => {
      loginMessage = "";
      showHeader();
      location.hash = "#/fleet";
      await route();
    });
    return;
  }
  showHeader();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("current", a.dataset.page === page);
  try {
    if (page === "bots" && arg) {
      context.botIds = [arg];
      leave = await renderBot(view, arg);
      return;
    }
    const found = PAGES.find((p) => p.path === page && (!p.admin || isAdmin()));
    if (!found) {
      clear(view, h("p", { class: "error" }, "No such page."));
      return;
    }
    leave = await found.render(view, { admin: isAdmin() });
  } catch (error) {
    if (error.status === 401) return; // the session ended: the login page is showing
    clear(view, h("p", { class: "error", role: "alert" }, error.message));
  }
}

whenSessionEnds((message) => {
  loginMessage = message;
  if (location.hash !== "#/login") location.hash = "#/login";
  else route();
});

function emergencyDialog() {
  const dialog = document.getElementById("estop-dialog");
  const scopes = document.getElementById("estop-scopes");
  const result = document.getElementById("estop-result");
  const choices = [];
  if (context.botIds.length) choices.push({ value: "these", label: "This bot" });
  choices.push({ value: "mine", label: "All my bots" });
  if (isAdmin()) choices.push({ value: "all", label: "The whole fleet (every user's bots)" });
  clear(
    scopes,
    h("legend", {}, "Which bots"),
    choices.map((c, i) =>
      h("label", {}, h("input", { type: "radio", name: "scope", value: c.value, checked: i === 0 }), " ", c.label),
    ),
  );
  clear(result);
  document.getElementById("estop-confirm").disabled = false;
  dialog.showModal();
}

async function emergencyStop(form) {
  const scope = new FormData(form).get("scope");
  const reason = new FormData(form).get("reason") || undefined;
  const body = scope === "these" ? { bot_ids: context.botIds, reason } : { scope, reason };
  const result = document.getElementById("estop-result");
  document.getElementById("estop-confirm").disabled = true;
  clear(result, h("p", { class: "muted" }, "Halting…"));
  try {
    const answer = await api("/api/v1/emergency-stop", { method: "POST", body });
    clear(
      result,
      h("p", {}, answer.completed ? `Done in ${answer.seconds.toFixed(1)} s.` : "Some gateways have not answered yet."),
      h(
        "ul",
        { class: "outcomes" },
        answer.results.map((r) =>
          h("li", { dataset: { outcome: r.outcome } }, `${r.bot_id}: ${r.outcome} (${r.actual_state})`, r.detail ? ` — ${r.detail}` : ""),
        ),
      ),
    );
  } catch (error) {
    clear(result, h("p", { class: "error", role: "alert" }, error.message));
  }
}

document.getElementById("estop").addEventListener("click", emergencyDialog);
document.getElementById("estop-form").addEventListener("submit", (event) => {
  if (event.submitter && event.submitter.value === "confirm") {
    event.preventDefault();
    emergencyStop(event.target);
  }
});
document.getElementById("logout").addEventListener("click", async () => {
  await logOut();
  loginMessage = "You are logged out.";
  location.hash = "#/login";
});

window.addEventListener("hashchange", route);
(async () => {
  await resume().catch(() => null);
  if (!currentUser() && location.hash !== "#/login") location.hash = "#/login"; // hashchange routes
  else route();
})();
