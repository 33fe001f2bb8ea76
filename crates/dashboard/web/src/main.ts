// The dashboard: three views chosen by the address's fragment — this node (#/), the
// deployments it orchestrates (#/deployments) and one deployment (#/deployments/<id>) —
// each refreshed every two seconds from the daemon's /api/v1/ui routes.

import "./style.css";
import { ApiError, get, hasToken, takeCode } from "./api";
import { lineChart } from "./chart";
import { ago, bytes, cores, duration, h, short } from "./dom";
import { LogView } from "./logview";
import type { Amounts, DeploymentDetail, DeploymentSummary, NodeView, Sample } from "./types";

const REFRESH_MS = 2000;
const main = document.getElementById("main") as HTMLElement;
const banner = document.getElementById("banner") as HTMLElement;
const conn = document.getElementById("conn") as HTMLElement;

let timer: number | undefined;
let logs: LogView | null = null;
let samples: Sample[] = [];

function showError(e: unknown): void {
  const msg = e instanceof ApiError && e.status === 401
    ? `No access (${e.message}). Run \`nunet dashboard\` on this machine and open the URL it prints within a minute: each URL works once, and each start of the daemon makes a new token.`
    : `The daemon did not answer: ${(e as Error).message}`;
  banner.textContent = msg;
  banner.hidden = false;
  conn.textContent = "disconnected";
}

function ok(): void {
  banner.hidden = true;
  conn.textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function table(head: string[], rows: HTMLElement[], testid: string): HTMLElement {
  return h("table", { "data-testid": testid }, h("thead", {}, h("tr", {}, ...head.map((c) => h("th", {}, c)))), h("tbody", {}, ...rows));
}

function err(v: unknown): string | null {
  return v && typeof v === "object" && "error" in v ? String((v as { error: unknown }).error) : null;
}

function bar(label: string, used: number, total: number, fmt: (v: number) => string): HTMLElement {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  // Sizes go through the CSSOM: the page's policy refuses inline style attributes.
  const fill = h("span", { class: "bar-fill" });
  fill.style.width = `${pct.toFixed(1)}%`;
  return h("div", { class: "bar" },
    h("span", { class: "bar-label" }, label),
    h("span", { class: "bar-track" }, fill),
    h("span", { class: "bar-text" }, `${fmt(used)} of ${fmt(total)} in use`),
  );
}

function resourceCharts(): HTMLElement {
  const series = (pick: (a: Amounts) => number) => [
    { label: "onboarded", cls: "total", points: samples.map((s) => [s.at_ms, pick(s.total)] as [number, number]) },
    { label: "allocated", cls: "allocated", points: samples.map((s) => [s.at_ms, pick(s.allocated)] as [number, number]) },
    { label: "committed", cls: "committed", points: samples.map((s) => [s.at_ms, pick(s.committed)] as [number, number]) },
  ];
  const legend = h("p", { class: "legend" }, h("span", { class: "total" }, "— onboarded"), " ", h("span", { class: "allocated" }, "— allocated"), " ", h("span", { class: "committed" }, "— committed"));
  return h("div", { class: "charts", "data-testid": "resource-chart" },
    h("figure", {}, lineChart("CPU", series((a) => a.cpu_cores), (v) => v.toFixed(1)), h("figcaption", {}, "CPU (cores)")),
    h("figure", {}, lineChart("Memory", series((a) => a.ram_bytes), bytes), h("figcaption", {}, "Memory")),
    legend,
  );
}

async function nodeView(): Promise<HTMLElement> {
  const after = samples.length ? samples[samples.length - 1].at_ms : 0;
  const [n, hist] = await Promise.all([
    get<NodeView>("/api/v1/ui/node"),
    get<{ samples: Sample[] }>(`/api/v1/ui/history?after=${after}`),
  ]);
  const last = samples.length ? samples[samples.length - 1].at_ms : 0;
  samples = samples.concat(hist.samples.filter((x) => x.at_ms > last)).slice(-720);
  const st = n.status;
  const self = n.self;
  const reach = self?.reachability;
  const peers = n.peers?.peers ?? [];
  const onb = n.onboarding;
  const total = onb?.onboarded_resources;
  const alloc = onb?.allocated;
  const committed = onb?.committed;
  const free = onb?.free;
  const hosted = n.hosted?.allocations ?? [];
  return h("div", {},
    h("section", { class: "cards" },
      h("div", { class: "card" },
        h("h3", {}, "Identity"),
        h("dl", {},
          h("dt", {}, "DID"), h("dd", { "data-testid": "node-did", class: "mono" }, st?.did ?? err(st) ?? ""),
          h("dt", {}, "Peer id"), h("dd", { class: "mono" }, st?.peer_id ?? ""),
          h("dt", {}, "Version"), h("dd", {}, st?.version ?? ""),
          h("dt", {}, "Up"), h("dd", {}, st ? duration(st.uptime_s * 1000) : ""),
          h("dt", {}, "Listening"), h("dd", { class: "mono small" }, ...(self?.addrs ?? st?.listen_addrs ?? []).map((a) => h("div", {}, a))),
        ),
      ),
      h("div", { class: "card" },
        h("h3", {}, "Reachability"),
        reach
          ? h("dl", { "data-testid": "reachability" },
              h("dt", {}, "NAT"), h("dd", {}, reach.nat),
              h("dt", {}, "Summary"), h("dd", {}, reach.summary),
              h("dt", {}, "Public addresses"), h("dd", { class: "mono small" }, ...(reach.public_addrs.length ? reach.public_addrs : ["none known"]).map((a) => h("div", {}, a))),
              h("dt", {}, "Relays"), h("dd", {}, reach.relays.length ? reach.relays.map((r) => `${short(r.relay)} ${r.reserved ? "(reserved)" : "(not reserved)"}`).join(", ") : "none"),
              h("dt", {}, "Hole punches"), h("dd", {}, `${reach.hole_punches.succeeded} succeeded, ${reach.hole_punches.failed} failed`),
            )
          : h("p", { class: "muted" }, err(self) ?? "unknown"),
      ),
      h("div", { class: "card" },
        h("h3", {}, "Resources"),
        onb?.onboarded && total && alloc && committed
          ? h("div", { "data-testid": "resources" },
              bar("CPU", alloc.cpu.cores + committed.cpu.cores, total.cpu.cores, cores),
              bar("Memory", alloc.ram.size + committed.ram.size, total.ram.size, bytes),
              bar("Disk", alloc.disk.size + committed.disk.size, total.disk.size, bytes),
              h("p", { class: "muted" }, `free: ${cores(free?.cpu.cores ?? 0)}, ${bytes(free?.ram.size ?? 0)} memory, ${bytes(free?.disk.size ?? 0)} disk`),
            )
          : h("p", { class: "muted", "data-testid": "resources" }, err(onb) ?? "Not onboarded: `nunet actor cmd /dms/node/onboarding/onboard --cpu … --ram … --disk …`"),
      ),
    ),
    h("section", {}, h("h2", {}, "Resources over time"), resourceCharts()),
    h("section", {},
      h("h2", {}, `Peers (${peers.length})`),
      err(n.peers) ? h("p", { class: "error" }, err(n.peers)) : null,
      table(["Peer", "DID", "Path", "RTT", "Addresses"], peers.map((p) =>
        h("tr", { "data-testid": "peer" },
          h("td", { class: "mono" }, short(p.peer_id, 20)),
          h("td", { class: "mono" }, short(p.did ?? "", 24)),
          h("td", {}, p.path),
          h("td", {}, p.rtt_ms == null ? "" : `${p.rtt_ms.toFixed(1)} ms`),
          h("td", { class: "mono small" }, p.addrs.join(" ")),
        )), "peers"),
    ),
    h("section", {},
      h("h2", {}, `Allocations hosted here (${hosted.length})`),
      hosted.length === 0 ? h("p", { class: "muted" }, err(n.hosted) ?? "none") :
      table(["Allocation", "Deployment", "Executor", "Status", "Health", "Restarts", "Started"], hosted.map((a) =>
        h("tr", { "data-testid": "hosted" },
          h("td", {}, `${a.node_id}.${a.name}`),
          h("td", { class: "mono" }, short(a.ensemble_id)),
          h("td", {}, a.executor),
          h("td", {}, h("span", { class: `status ${a.status}` }, a.status), a.exit_code != null ? ` (exit ${a.exit_code})` : ""),
          h("td", {}, a.health ? (a.health.healthy ? "healthy" : `unhealthy: ${a.health.message}`) : "—"),
          h("td", {}, a.restarts),
          h("td", {}, a.started_ms ? ago(a.started_ms) : ""),
        )), "hosted-table"),
    ),
  );
}

async function deploymentsView(): Promise<HTMLElement> {
  const { deployments } = await get<{ deployments: DeploymentSummary[] }>("/api/v1/ui/deployments");
  if (deployments.length === 0) return h("p", { class: "muted" }, "This node orchestrates no deployment. Deploy one with `nunet deploy <ensemble.yaml>`.");
  return h("section", {},
    h("h2", {}, `Deployments (${deployments.length})`),
    table(["Id", "Status", "Created", "Nodes", "Allocations", "Rounds"], deployments.map((d) =>
      h("tr", { "data-testid": "deployment" },
        h("td", { class: "mono" }, h("a", { href: `#/deployments/${d.id}` }, short(d.id, 16))),
        h("td", {}, h("span", { class: `status ${d.status}` }, d.status), d.reason ? h("div", { class: "small muted" }, d.reason) : null),
        h("td", {}, ago(d.created_ms)),
        h("td", {}, Object.keys(d.nodes).length),
        h("td", {}, Object.entries(d.allocations).map(([k, s]) => `${k}: ${s}`).join(", ")),
        h("td", {}, d.rounds),
      )), "deployments"),
  );
}

function timelineView(d: DeploymentDetail): HTMLElement {
  const phases = d.timeline;
  if (phases.length === 0) return h("p", { class: "muted" }, "no events yet");
  const start = phases[0].start_ms;
  const end = Math.max(d.now_ms, ...phases.map((p) => p.end_ms ?? p.start_ms));
  const total = Math.max(1, end - start);
  return h("div", { class: "timeline", "data-testid": "timeline" },
    ...phases.map((p) => {
      const len = (p.end_ms ?? end) - p.start_ms;
      const el = h("div", { class: `phase ${p.phase}`, "data-testid": "phase", title: `${p.phase}: ${duration(len)}, ${p.events} events` },
        h("span", {}, p.phase), h("span", { class: "small" }, p.end_ms == null ? `${duration(len)} so far` : duration(len)));
      el.style.flexGrow = Math.max(len / total, 0.04).toFixed(3);
      return el;
    }),
  );
}

/** One deployment, as the parts around its log view (which lives across refreshes). */
async function deploymentView(id: string): Promise<{ d: DeploymentDetail; top: HTMLElement; bottom: HTMLElement }> {
  const d = await get<DeploymentDetail>(`/api/v1/ui/deployments/${encodeURIComponent(id)}`);
  const s = d.summary;
  const allocs = Object.entries(d.manifest.allocations);
  const events = s.events ?? [];
  const top = h("div", {},
    h("h2", {}, "Deployment ", h("span", { class: "mono" }, short(s.id, 24)), " ", h("span", { class: `status ${s.status}`, "data-testid": "deployment-status" }, s.status)),
    s.reason ? h("p", { class: "error" }, s.reason) : null,
    h("p", { class: "muted" }, `created ${ago(s.created_ms, d.now_ms)} by ${short(s.owner, 28)}; ${s.rounds} round(s)`),
    h("section", {}, h("h3", {}, "Timeline"), timelineView(d)),
    h("section", {},
      h("h3", {}, `Allocations (${allocs.length})`),
      table(["Allocation", "Provider", "Address", "Ports", "Status", "Health", "Restarts"], allocs.map(([key, a]) => {
        const node = d.manifest.nodes[a.node_id];
        return h("tr", { "data-testid": "allocation" },
          h("td", {}, key),
          h("td", { class: "mono", title: node?.did ?? "" }, node ? `${short(node.peer, 20)}${node.location ? ` (${node.location})` : ""}` : ""),
          h("td", { class: "mono" }, [a.ip, a.dns].filter(Boolean).join(" ") || "—"),
          h("td", { class: "mono" }, Object.entries(a.ports).map(([hp, cp]) => `${hp}→${cp}`).join(" ") || "—"),
          h("td", {}, h("span", { class: `status ${a.status}` }, a.status), a.exit_code != null ? ` (exit ${a.exit_code})` : ""),
          h("td", {}, a.health ? (a.health.healthy ? `healthy (${a.health.checks} checks)` : `unhealthy: ${a.health.message}`) : "—"),
          h("td", {}, a.restarts),
        );
      }), "allocations"),
    ),
  );
  const bottom = h("section", {},
    h("h3", {}, `Events (${events.length})`),
    h("ul", { class: "events", "data-testid": "events" }, ...events.slice().reverse().map((e) =>
      h("li", {}, h("span", { class: "muted" }, `+${duration(Math.max(0, e.at_ms - s.created_ms))}`), " ", h("span", { class: `status ${e.phase}` }, e.phase), " ", e.message))),
  );
  return { d, top, bottom };
}

/** The slots of a deployment page: refreshed around a log view that stays in the document. */
let slots: { id: string; top: HTMLElement; bottom: HTMLElement } | null = null;
/** Counts renders: a render that finishes after a newer one began shows nothing. */
let generation = 0;

function stopLogs(): void {
  logs?.stop();
  logs = null;
  slots = null;
}

async function render(): Promise<void> {
  const mine = ++generation;
  const route = location.hash.replace(/^#/, "") || "/";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", (a as HTMLAnchorElement).hash === `#${route.startsWith("/deployments") ? "/deployments" : "/"}`);
  const m = route.match(/^\/deployments\/([0-9a-zA-Z]+)$/);
  try {
    if (m) {
      const { d, top, bottom } = await deploymentView(m[1]);
      if (mine !== generation) return;
      const id = d.summary.id;
      if (!logs || logs.id !== id) {
        stopLogs();
        logs = new LogView(id, Object.keys(d.manifest.allocations));
        void logs.start();
      }
      if (!slots || slots.id !== id || !main.contains(logs.el)) {
        slots = { id, top: h("div"), bottom: h("div") };
        main.replaceChildren(slots.top, logs.el, slots.bottom);
      }
      // Only the parts around the log view are replaced: it keeps its scroll position.
      slots.top.replaceChildren(top);
      slots.bottom.replaceChildren(bottom);
    } else {
      const view = route === "/deployments" ? await deploymentsView() : await nodeView();
      if (mine !== generation) return;
      stopLogs();
      const y = window.scrollY;
      main.replaceChildren(view);
      window.scrollTo(0, y);
    }
    ok();
  } catch (e) {
    if (mine === generation) showError(e);
  }
}

function schedule(): void {
  window.clearTimeout(timer);
  timer = window.setTimeout(async () => {
    await render();
    schedule();
  }, REFRESH_MS);
}

/** Trades a one-time code from the address (if any) for the token; false (and shown) if refused. */
async function login(): Promise<boolean> {
  try {
    await takeCode();
    return true;
  } catch (e) {
    showError(e);
    return false;
  }
}

window.addEventListener("hashchange", async () => {
  // A new address from `nunet dashboard` (after a restart of the daemon) brings a new code.
  if (!(await login())) return;
  void render();
  schedule();
});
void (async () => {
  if (!(await login())) return;
  if (!hasToken()) {
    showError(new ApiError(401, "no token in this tab"));
    return;
  }
  await render();
  schedule();
})();
