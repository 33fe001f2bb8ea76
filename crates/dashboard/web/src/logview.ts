// The live output of a deployment: a follow session opened through the dashboard API, its
// frames read as they arrive and shown per allocation (stderr marked). The view keeps the
// latest MAX_LINES lines of at most MAX_LINE characters; each network chunk is added to the
// page in one go, so a long replay does not lay the page out once per line.

import { post, stream } from "./api";
import { h } from "./dom";
import { FrameReader } from "./frames";

const MAX_LINES = 5000;
const MAX_LINE = 4096;

export class LogView {
  readonly el: HTMLElement;
  private pre: HTMLElement;
  private state: HTMLElement;
  private select: HTMLSelectElement;
  private abort: AbortController | null = null;
  private decoders = new Map<string, TextDecoder>();
  private partial = new Map<string, string>();
  private pending: HTMLElement[] = [];

  constructor(
    readonly id: string,
    allocations: string[],
  ) {
    this.select = h("select", { "data-testid": "log-allocation", onchange: () => void this.start() },
      h("option", { value: "" }, "all allocations"),
      ...allocations.map((a) => h("option", { value: a }, a)),
    ) as HTMLSelectElement;
    this.state = h("span", { class: "muted", "data-testid": "log-state" }, "");
    this.pre = h("pre", { class: "log", "data-testid": "log" });
    this.el = h("section", {},
      h("h3", {}, "Live output ", this.select, " ", h("button", { onclick: () => void this.start() }, "Follow again"), " ", this.state),
      this.pre,
    );
  }

  stop(): void {
    this.abort?.abort();
    this.abort = null;
  }

  /** Follows the selected allocation (or all) from the start of what the providers keep. */
  async start(): Promise<void> {
    this.stop();
    const allocation = this.select.value || undefined;
    this.pre.replaceChildren();
    this.decoders.clear();
    this.partial.clear();
    const abort = new AbortController();
    this.abort = abort;
    this.state.textContent = "connecting…";
    let ended = false;
    try {
      const s = await post<{ url: string }>(`/api/v1/ui/deployments/${encodeURIComponent(this.id)}/follow`, allocation ? { allocation } : {});
      if (abort.signal.aborted) return;
      const reader = await stream(s.url, abort.signal);
      this.state.textContent = "following";
      const frames = new FrameReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const f of frames.push(value)) {
          switch (f.kind) {
            case "output":
              this.output(f.key, f.channel, f.data);
              break;
            case "skipped":
              this.note(f.key, `${f.channel} before byte ${f.to} was dropped by the provider's retention limit`);
              break;
            case "state":
              this.flush(f.key);
              this.note(f.key, `now ${f.status}${f.exitCode !== undefined ? ` (exit ${f.exitCode})` : ""}`);
              break;
            case "error":
              this.note(f.key, `cannot follow: ${f.message}`);
              break;
            case "done":
              this.flush();
              this.state.textContent = `ended: ${f.status}`;
              ended = true;
              break;
            case "begin":
              break;
          }
        }
        this.show();
        if (ended) return;
      }
      this.flush();
      this.show();
      if (this.abort === abort) this.state.textContent = "the stream was cut: Follow again replays it";
    } catch (e) {
      if (!abort.signal.aborted) this.state.textContent = `error: ${(e as Error).message}`;
    } finally {
      // A stream that did not end with its done frame (an error, a bad frame) is closed here,
      // so the daemon stops sending it.
      if (!ended) abort.abort();
      if (this.abort === abort) this.abort = null;
    }
  }

  private output(key: string, channel: string, data: Uint8Array): void {
    const k = `${key}\u0000${channel}`;
    let dec = this.decoders.get(k);
    if (!dec) {
      dec = new TextDecoder();
      this.decoders.set(k, dec);
    }
    let text = (this.partial.get(k) ?? "") + dec.decode(data, { stream: true });
    const parts = text.split("\n");
    text = parts.pop() ?? "";
    for (const line of parts) this.line(key, channel, line);
    // Output without newlines (progress bars) is shown in pieces, not held without bound.
    while (text.length >= MAX_LINE) {
      this.line(key, channel, text.slice(0, MAX_LINE));
      text = text.slice(MAX_LINE);
    }
    this.partial.set(k, text);
  }

  /** Shows what is left of unfinished lines (of `key`, or of all). */
  private flush(key?: string): void {
    for (const [k, dec] of this.decoders) {
      const [kk, channel] = k.split("\u0000");
      if (key !== undefined && kk !== key) continue;
      const rest = (this.partial.get(k) ?? "") + dec.decode();
      if (rest) this.line(kk, channel, rest);
      this.partial.set(k, "");
    }
  }

  private note(key: string, text: string): void {
    this.line(key, "note", `== ${text}`);
  }

  private line(key: string, channel: string, text: string): void {
    const t = text.length > MAX_LINE ? `${text.slice(0, MAX_LINE)}…` : text;
    this.pending.push(h("div", { class: `ln ${channel}`, "data-testid": "log-line" }, h("span", { class: "key" }, key), " ", t));
  }

  /** Adds the lines of one chunk at once, drops the oldest beyond MAX_LINES, keeps the tail in view. */
  private show(): void {
    if (this.pending.length === 0) return;
    const stick = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    const lines = this.pending.slice(-MAX_LINES);
    this.pending = [];
    this.pre.append(...lines);
    for (let extra = this.pre.childElementCount - MAX_LINES; extra > 0; extra--) this.pre.firstElementChild?.remove();
    if (stick) this.pre.scrollTop = this.pre.scrollHeight;
  }
}
