// The dashboard's calls to its daemon. The page gets the run's token for a one-time code that
// `nunet dashboard` puts in the URL's fragment (which the browser never sends to a server),
// keeps it in this tab's sessionStorage, and sends it with every call as a Bearer header.

const KEY = "nunet-dashboard-token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Trades `#code=…` in the address (from `nunet dashboard`: one use, within a minute) for the
 * run's token, kept in this tab's storage. The code leaves the address bar first; a code
 * that lingers in the browser's history is spent.
 */
export async function takeCode(): Promise<void> {
  const m = location.hash.match(/[#&]code=([0-9a-f]{32})/);
  if (!m) return;
  history.replaceState(null, "", `${location.pathname}#/`);
  const r = await fetch("/api/v1/ui/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: m[1] }),
    cache: "no-store",
  });
  if (!r.ok) throw await failure(r);
  const { token } = (await r.json()) as { token: string };
  sessionStorage.setItem(KEY, token);
}

export function hasToken(): boolean {
  return sessionStorage.getItem(KEY) !== null;
}

function auth(): Record<string, string> {
  const t = sessionStorage.getItem(KEY);
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function failure(r: Response): Promise<ApiError> {
  let message = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body?.error?.message) message = body.error.message;
  } catch {
    // Not JSON: the status line says enough.
  }
  return new ApiError(r.status, message);
}

export async function get<T>(path: string): Promise<T> {
  const r = await fetch(path, { headers: auth(), cache: "no-store" });
  if (!r.ok) throw await failure(r);
  return (await r.json()) as T;
}

export async function post<T>(path: string, body: unknown): Promise<T> {
  const r = await fetch(path, {
    method: "POST",
    headers: { ...auth(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw await failure(r);
  return (await r.json()) as T;
}

/** The raw body of a follow session (frames), or an error. */
export async function stream(path: string, signal: AbortSignal): Promise<ReadableStreamDefaultReader<Uint8Array>> {
  const r = await fetch(path, { signal, cache: "no-store" });
  if (!r.ok || !r.body) throw await failure(r);
  return r.body.getReader();
}
