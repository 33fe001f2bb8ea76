// Drives the dashboard of a running devnet node in headless Chromium (Debian's, through
// playwright-core) and checks what an operator would look at; saves screenshots.
//
//   node e2e/dashboard.mjs --url <nunet dashboard URL> --deployment <id> --did <node DID> \
//        --peers <n> --allocations <n> --out <dir>
//
// Exits 0 when every check passed; otherwise prints what failed and exits 1. Used by
// crates/cli/tests/dashboard.rs.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
for (const k of ["url", "deployment", "did", "peers", "allocations", "out"]) {
  if (!args[k]) throw new Error(`missing --${k}`);
}
mkdirSync(args.out, { recursive: true });

const problems = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) problems.push(what);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const consoleErrors = [];
page.on("console", (m) => {
  if (m.type() === "error") consoleErrors.push(m.text());
});
page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message}`));
let closing = false;
page.on("requestfailed", (r) => {
  // The log stream is aborted on purpose when the view changes; polls end when the browser does.
  if (!closing && !r.url().includes("/api/v1/output/")) consoleErrors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
});

try {
  // This node.
  await page.goto(args.url);
  await page.getByTestId("node-did").waitFor({ timeout: 15_000 });
  check(!page.url().includes("code="), "the one-time code is taken out of the address bar");
  check((await page.getByTestId("node-did").textContent()) === args.did, `the node's DID is ${args.did}`);
  await page.waitForFunction((n) => document.querySelectorAll("[data-testid=peer]").length >= n, Number(args.peers), { timeout: 20_000 });
  check((await page.getByTestId("peer").count()) >= Number(args.peers), `at least ${args.peers} peers (the devnet's other nodes) are listed`);
  check((await page.getByTestId("reachability").count()) === 1, "reachability is shown");
  check((await page.getByTestId("resources").textContent()).includes("in use"), "onboarded resources are shown with what is in use");
  check((await page.locator("[data-testid=resource-chart] svg polyline").count()) >= 1, "the resource chart has lines");
  await page.screenshot({ path: join(args.out, "node.png"), fullPage: true });

  // The deployments.
  await page.getByTestId("nav-deployments").click();
  await page.getByTestId("deployment").first().waitFor({ timeout: 10_000 });
  const rows = await page.getByTestId("deployment").allTextContents();
  check(rows.some((r) => r.includes(args.deployment.slice(0, 16)) && r.includes("Running")), "the deployment is listed as Running");
  await page.screenshot({ path: join(args.out, "deployments.png"), fullPage: true });

  // One deployment: timeline, allocations, live output.
  await page.locator(`a[href="#/deployments/${args.deployment}"]`).click();
  await page.getByTestId("timeline").waitFor({ timeout: 10_000 });
  const phases = await page.getByTestId("phase").allTextContents();
  check(phases.length >= 3, `the timeline has the deployment's phases (${phases.map((p) => p.replace(/\d.*$/, "")).join(" → ")})`);
  check(phases.some((p) => p.startsWith("Preparing")) && phases.at(-1).startsWith("Running"), "it goes from Preparing to Running");
  check((await page.getByTestId("allocation").count()) === Number(args.allocations), `${args.allocations} allocations with their providers`);
  const allocText = (await page.getByTestId("allocations").textContent()) ?? "";
  check((allocText.match(/running/g) ?? []).length === Number(args.allocations), "every allocation shows its status (running)");
  // Each allocation's output arrives on its own stream: wait for both (a loaded machine can
  // start one follow seconds after the other) rather than judging the first lines.
  const both = await page
    .waitForFunction(
      () => {
        const lines = [...document.querySelectorAll("[data-testid=log-line]")].map((l) => l.textContent ?? "");
        return lines.length >= 3 && lines.some((l) => l.includes("tick a")) && lines.some((l) => l.includes("tick b"));
      },
      null,
      { timeout: 30_000 },
    )
    .then(() => true, () => false);
  const before = await page.getByTestId("log-line").count();
  check(both, "the live log shows both allocations' output");
  check((await page.locator("[data-testid=log-line].stderr").count()) > 0, "stderr lines are marked");
  // Output keeps arriving without reloading the page.
  await page.waitForFunction((n) => document.querySelectorAll("[data-testid=log-line]").length >= n + 3, before, { timeout: 20_000 });
  const after = await page.getByTestId("log-line").count();
  check(after >= before + 3, `the live log view updates (${before} → ${after} lines)`);
  check((await page.getByTestId("log-state").textContent()) === "following", "the log view is following");
  // The log view lives across the page's refreshes (every 2 s): it keeps its scroll position.
  await page.getByTestId("log").evaluate((el) => { el.dataset.mark = "kept"; });
  await page.waitForTimeout(4500);
  check((await page.getByTestId("log").getAttribute("data-mark")) === "kept", "the log view is the same element after two refreshes");
  await page.screenshot({ path: join(args.out, "deployment.png"), fullPage: true });

  // The URL again (its code is spent), and a page without any: told what to do, shown nothing.
  const again = await browser.newPage();
  await again.goto(args.url);
  await again.locator("#banner:not([hidden])").waitFor({ timeout: 10_000 });
  check((await again.locator("#banner").textContent()).includes("used"), "a URL opened a second time is refused (its code is spent)");
  check((await again.getByTestId("node-did").count()) === 0, "a spent code shows nothing of the node");
  await again.close();
  const bare = await browser.newPage();
  const bareErrors = [];
  bare.on("console", (m) => m.type() === "error" && bareErrors.push(m.text()));
  await bare.goto(args.url.replace(/#.*$/, ""));
  await bare.locator("#banner:not([hidden])").waitFor({ timeout: 10_000 });
  check((await bare.locator("#banner").textContent()).includes("nunet dashboard"), "without the token the page says to run `nunet dashboard`");
  check((await bare.getByTestId("node-did").count()) === 0, "without the token nothing of the node is shown");
  await bare.close();
} catch (e) {
  problems.push(`${e.message}`);
  console.log(`FAIL ${e.message}`);
  await page.screenshot({ path: join(args.out, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  closing = true;
  await browser.close();
}

check(consoleErrors.length === 0, `no console errors${consoleErrors.length ? `: ${consoleErrors.join(" | ")}` : ""}`);
if (problems.length) {
  console.log(`${problems.length} check(s) failed`);
  process.exit(1);
}
console.log("all dashboard checks passed");
