import { logIn } from "../api.js";
import { clear, h } from "../dom.js";

export function renderLogin(view, message, done) {
  const error = h("p", { class: "error", role: "alert", id: "login-error" }, message || "");
  error.hidden = !message;
  const form = h(
    "form",
    { id: "login", class: "card narrow" },
    h("h1", {}, "Freqfleet"),
    h("p", { class: "muted" }, "Log in with your Freqfleet account."),
    error,
    h("label", {}, "Email", h("input", { name: "email", type: "email", autocomplete: "username", required: true })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit" }, "Log in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      await logIn(String(data.get("email")), String(data.get("password")));
      await done();
    } catch (failure) {
      clear(error, failure.message);
      error.hidden = false;
    }
  });
  clear(view, form);
}
