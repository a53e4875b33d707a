// The console's session with the gateway (GET/POST/DELETE /api/session): a gateway with API
// tokens wants one signed in, and the session cookie it sets then carries every request and
// EventSource. Whatever learns that the session is gone (a 401 anywhere) says so with
// `sessionEnded()`; main.js listens with `onSessionEnded` and brings the sign-in back.

const ENDED = "ragpoc:session-ended";

/** The session as GET /api/session describes it ({ name, scope, auth: "on"|"off" }), null when
 * not signed in (401); throws when the gateway cannot be asked. */
export async function currentSession() {
  const res = await fetch("/api/session", { headers: { accept: "application/json" } });
  if (res.status === 401) return null;
  // a gateway that predates sessions has no such route, and no tokens either
  if (res.status === 404) return { name: "anonymous", scope: "write", auth: "off" };
  if (!res.ok) throw new Error(`GET /api/session: HTTP ${res.status}`);
  return res.json();
}

/** Signs in with an API token; resolves with the session, or null when the token is refused. */
export async function signIn(token) {
  const res = await fetch("/api/session", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ token }),
  });
  if (res.status === 401) return null;
  if (!res.ok) throw new Error(`could not sign in: HTTP ${res.status}`);
  const session = await res.json();
  return { auth: "on", ...session };
}

export async function signOut() {
  await fetch("/api/session", { method: "DELETE" });
}

export function sessionEnded() {
  window.dispatchEvent(new CustomEvent(ENDED));
}

export function onSessionEnded(fn) {
  window.addEventListener(ENDED, fn);
}
