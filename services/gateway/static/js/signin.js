// The sign-in page (a gateway with API tokens) and the header's session control: who is signed
// in, and "Sign out". Both only show when the gateway has tokens (`auth: "on"`).

import { $, announce, el } from "./dom.js";
import { mount } from "./router.js";
import { signIn } from "./session.js";

/** Shows who is signed in, and the sign-out button, in the header; nothing when auth is off. */
export function showSession(session) {
  const on = session?.auth === "on";
  $("#session").hidden = !on;
  $("#session-name").textContent = on ? `${session.name} (${session.scope})` : "";
}

/** Mounts the sign-in page, with `message` above the form; `onSignedIn(session)` runs once a
 * token is accepted. */
export function showSignIn(message, onSignedIn) {
  mount("#tpl-signin");
  document.title = "Sign in · rag-poc";
  const form = $("#signin-form");
  const input = $("#signin-token");
  const button = $("#signin-submit");
  const msg = $("#signin-msg");
  if (message) msg.replaceChildren(el("p", { class: "alert info" }, message));
  input.focus();

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    msg.replaceChildren();
    try {
      const session = await signIn(token);
      if (session === null) {
        msg.replaceChildren(el("p", { class: "alert" }, "That token is not valid: check it and try again."));
        input.select();
        return;
      }
      input.value = "";
      announce(`Signed in as ${session.name}.`);
      onSignedIn(session);
    } catch (err) {
      msg.replaceChildren(el("p", { class: "alert" }, `Could not sign in: ${err.message}`));
    } finally {
      button.disabled = false;
    }
  });
}
