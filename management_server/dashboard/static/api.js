// The session and the API. The access token lives only in this module's memory; the refresh token is an
// HttpOnly cookie the server set, which this code never sees. A reload asks for a new access token with it.

const CSRF_COOKIE = "freqfleet_csrf";
const SESSION_ENDED = "Your session has ended: log in again.";

let accessToken = null;
let me = null;
let onSessionEnded = () => {};

export class ApiError extends Error {
  constructor(status, detail, body = null) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

export function whenSessionEnds(callback) {
  onSessionEnded = callback;
}

export function currentUser() {
  return me;
}

export function token() {
  return accessToken;
}

function csrf() {
  const found = document.cookie.split("; ").find((c) => c.startsWith(`${CSRF_COOKIE}=`));
  return found ? decodeURIComponent(found.slice(CSRF_COOKIE.length + 1)) : "";
}

function detailOf(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return `The server answered ${status}.`;
}

async function loadMe() {
  me = await api("/api/v1/users/me");
  return me;
}

export async function logIn(email, password) {
  const form = new URLSearchParams({ username: email, password });
  const response = await fetch("/api/v1/auth/session", { method: "POST", body: form, credentials: "same-origin" });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, detailOf(body, response.status));
  accessToken = body.access_token;
  return loadMe();
}

export async function resume() {
  // A page (re)loaded: the session's cookie, if any, buys an access token.
  if (!csrf() || !(await refresh())) return null;
  return loadMe();
}

async function refresh() {
  const response = await fetch("/api/v1/auth/session/refresh", {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf() },
  });
  if (!response.ok) {
    accessToken = null;
    return false;
  }
  accessToken = (await response.json()).access_token;
  return true;
}

export async function logOut() {
  try {
    await fetch("/api/v1/auth/session", {
      method: "DELETE",
      credentials: "same-origin",
      headers: { Authorization: `Bearer ${accessToken}`, "X-CSRF-Token": csrf() },
    });
  } finally {
    accessToken = null;
    me = null;
  }
}

export async function api(path, { method = "GET", body, retry = true } = {}) {
  if (!accessToken && !(await refresh())) {
    onSessionEnded(SESSION_ENDED);
    throw new ApiError(401, SESSION_ENDED);
  }
  const headers = { Authorization: `Bearer ${accessToken}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 401 && retry) {
    if (await refresh()) return api(path, { method, body, retry: false });
    onSessionEnded(SESSION_ENDED);
    throw new ApiError(401, SESSION_ENDED);
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, detailOf(data, response.status), data);
  return data;
}

// Server-Sent Events over fetch (EventSource can't send the Authorization header): calls onEvent(type, data)
// for each event until stopped; reconnects with a fresh token after a drop. onOpen() runs each time a stream
// opens (a stream that starts with what is (the last log lines, say) then repeats it).
export function subscribe(path, onEvent, onOpen = null) {
  const controller = new AbortController();
  let stopped = false;
  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        if (!accessToken && !(await refresh())) {
          onSessionEnded(SESSION_ENDED);
          return;
        }
        const response = await fetch(path, {
          headers: { Authorization: `Bearer ${accessToken}`, Accept: "text/event-stream" },
          signal: controller.signal,
        });
        if (response.status === 401) {
          if (!(await refresh())) {
            onSessionEnded(SESSION_ENDED);
            return;
          }
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`live feed: ${response.status}`);
        delay = 500;
        if (onOpen) onOpen();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let type = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) type = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
            }
            if (!data.length) continue;
            if (type === "ready") document.body.dataset.live = "ready"; // the page is live (tests and benchmarks)
            onEvent(type, JSON.parse(data.join("\n")));
          }
        }
      } catch (error) {
        if (stopped) return;
      }
      delete document.body.dataset.live;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => {
    stopped = true;
    controller.abort();
  };
}
