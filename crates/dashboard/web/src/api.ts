// The dashboard's calls to its daemon. The token comes once in the URL's fragment (which the
// browser never sends to a server), is kept in this tab's sessionStorage, and goes with every
// call as a Bearer header.

const KEY = "nunet-dashboard-token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Takes `#token=…` out of the address (keeping the rest of the route) into this tab's storage. */
export function takeToken(): void {
  const m = location.hash.match(/[#&]token=([0-9a-f]{64})/);
  if (!m) return;
  sessionStorage.setItem(KEY, m[1]);
  const rest = location.hash.replace(/[#&]token=[0-9a-f]{64}/, "").replace(/^#?&?/, "");
  history.replaceState(null, "", `${location.pathname}#${rest.startsWith("/") ? rest : "/"}`);
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
