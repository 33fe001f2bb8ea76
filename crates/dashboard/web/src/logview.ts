// The live output of a deployment: a follow session opened through the dashboard API, its
// frames read as they arrive and shown per allocation (stderr marked). The view keeps the
// latest MAX_LINES lines.

import { post, stream } from "./api";
import { h } from "./dom";
import { FrameReader } from "./frames";

const MAX_LINES = 5000;

export class LogView {
  readonly el: HTMLElement;
  private pre: HTMLElement;
  private state: HTMLElement;
  private abort: AbortController | null = null;
  private decoders = new Map<string, TextDecoder>();
  private partial = new Map<string, string>();
  private lines = 0;

  constructor(
    readonly id: string,
    allocations: string[],
  ) {
    const select = h("select", { "data-testid": "log-allocation", onchange: (e: Event) => this.start((e.target as HTMLSelectElement).value || undefined) },
      h("option", { value: "" }, "all allocations"),
      ...allocations.map((a) => h("option", { value: a }, a)),
    );
    this.state = h("span", { class: "muted", "data-testid": "log-state" }, "");
    this.pre = h("pre", { class: "log", "data-testid": "log" });
    this.el = h("section", {},
      h("h3", {}, "Live output ", select, " ", h("button", { onclick: () => this.start(select instanceof HTMLSelectElement ? select.value || undefined : undefined) }, "Follow again"), " ", this.state),
      this.pre,
    );
  }

  stop(): void {
    this.abort?.abort();
    this.abort = null;
  }

  async start(allocation?: string): Promise<void> {
    this.stop();
    this.pre.replaceChildren();
    this.decoders.clear();
    this.partial.clear();
    this.lines = 0;
    const abort = new AbortController();
    this.abort = abort;
    this.state.textContent = "connecting…";
    try {
      const s = await post<{ url: string }>(`/api/v1/ui/deployments/${encodeURIComponent(this.id)}/follow`, allocation ? { allocation } : {});
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
              this.note(f.key, `now ${f.status}${f.exitCode !== undefined ? ` (exit ${f.exitCode})` : ""}`);
              break;
            case "error":
              this.note(f.key, `cannot follow: ${f.message}`);
              break;
            case "done":
              this.state.textContent = `ended: ${f.status}`;
              return;
            case "begin":
              break;
          }
        }
      }
      if (this.abort === abort) this.state.textContent = "the stream was cut: Follow again replays it";
    } catch (e) {
      if (!abort.signal.aborted) this.state.textContent = `error: ${(e as Error).message}`;
    }
  }

  private output(key: string, channel: string, data: Uint8Array): void {
    const k = `${key}\u0000${channel}`;
    let dec = this.decoders.get(k);
    if (!dec) {
      dec = new TextDecoder();
      this.decoders.set(k, dec);
    }
    const text = (this.partial.get(k) ?? "") + dec.decode(data, { stream: true });
    const parts = text.split("\n");
    this.partial.set(k, parts.pop() ?? "");
    for (const line of parts) this.line(key, channel, line);
  }

  private note(key: string, text: string): void {
    this.line(key, "note", `== ${text}`);
  }

  private line(key: string, channel: string, text: string): void {
    const stick = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    this.pre.append(h("div", { class: `ln ${channel}`, "data-testid": "log-line" }, h("span", { class: "key" }, key), " ", text));
    if (++this.lines > MAX_LINES) {
      this.pre.firstElementChild?.remove();
      this.lines--;
    }
    if (stick) this.pre.scrollTop = this.pre.scrollHeight;
  }
}
