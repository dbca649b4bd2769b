// Drives the dashboard in headless Chromium (Debian's, through playwright-core: no browser
// download) against a real `swarmd api` and worker that tests/it/ui.rs set up. Exits
// non-zero with the step that failed; saves a screenshot of every page in ARTIFACTS.
//
// Env: BASE (the API's URL), TOKEN (a write token), SCENARIO (JSON: needle, needle_id,
// sleeper_id, late_agent), ARTIFACTS (a folder), PLAYWRIGHT (playwright-core's folder),
// CHROMIUM (the browser's path).
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT);
const base = process.env.BASE;
const token = process.env.TOKEN;
const scenario = JSON.parse(process.env.SCENARIO);
const artifacts = process.env.ARTIFACTS;
mkdirSync(artifacts, { recursive: true });

let step = "start";
const check = (ok, what) => { if (!ok) throw new Error(`${step}: ${what}`); };
const shot = (page, name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("dialog", (dialog) => { globalThis.lastDialog = dialog.message(); dialog.accept(); });
  const timings = {};

  step = "an unauthenticated visitor sees the login, not data";
  const dataRequests = [];
  page.on("request", (r) => { if (r.url().includes("/v1/")) dataRequests.push(r.url()); });
  let started = Date.now();
  await page.goto(`${base}/ui`);
  await page.waitForSelector("#login:not([hidden])");
  timings.login_page_ms = Date.now() - started;
  check(await page.isHidden("#view"), "the data view is hidden");
  check(dataRequests.length === 0, `no API call before logging in (${dataRequests})`);
  await page.fill("#token", "not-a-token");
  await page.click("#login button");
  await page.waitForSelector("#login-error:has-text('not accepted')");
  await shot(page, "login");

  step = "logging in shows the overview with a backlog draining";
  started = Date.now();
  await page.fill("#token", token);
  await page.click("#login button");
  await page.waitForSelector("#queues tr td");
  timings.overview_ms = Date.now() - started;
  step = "the live feed connects";
  await page.waitForSelector("#live:has-text('live')");
  step = "logging in shows the overview with a backlog draining";
  const pendings = [];
  for (let i = 0; i < 40; i++) {
    pendings.push(Number(await page.getAttribute("#queues", "data-pending")));
    if (pendings.some((p) => p > 0) && pendings.at(-1) === 0) break;
    await page.waitForTimeout(500);
  }
  check(pendings.some((p) => p > 0), `a backlog was shown (${pendings})`);
  check(pendings.at(-1) === 0, `it drained, pushed live without reloading (${pendings})`);
  step = "the outcomes per minute are drawn";
  await page.waitForSelector("#bars div");
  await shot(page, "overview");

  step = "a search by a value inside data finds the task";
  await page.click("a[href='#/tasks']");
  await page.waitForSelector("#results tr");
  await page.fill("input[name=q]", scenario.needle);
  started = Date.now();
  await page.click("#filters button[type=submit]");
  await page.waitForSelector(`#results tr[data-id='${scenario.needle_id}']`);
  timings.search_ms = Date.now() - started;
  check(Number(await page.getAttribute("#results", "data-count")) === 1, "exactly the one task");
  await page.fill("input[name=q]", "");
  await page.fill("input[name=contains]", JSON.stringify({ customer: scenario.needle }));
  await page.click("#filters button[type=submit]");
  await page.waitForSelector(`#results tr[data-id='${scenario.needle_id}']`);
  await shot(page, "tasks");

  step = "a finished task's page shows its legacy mirror entry";
  await page.goto(`${base}/ui#/task/${scenario.needle_id}`);
  await page.waitForSelector("#legacy code:has-text('completed_tasks')");

  step = "a running sleep task shows progress and is cancelled from its page";
  await page.goto(`${base}/ui#/task/${scenario.sleeper_id}`);
  await page.waitForSelector("#progress");
  const first = Number(await page.getAttribute("#progress", "value"));
  await page.waitForFunction((v) => Number(document.querySelector("#progress").value) > v, first, { timeout: 10000 });
  await shot(page, "task");
  started = Date.now();
  await page.click("#cancel");
  await page.waitForSelector("#task-status:has-text('cancelled')", { timeout: 1000 });
  timings.cancel_ms = Date.now() - started;
  await page.waitForSelector("#action:has-text('cancelled by api:write token')");

  step = "a dead letter is replayed by a click";
  await page.click("a[href='#/dlq']");
  await page.fill("#dlq-filters input[name=agent_type]", scenario.late_agent);
  await page.click("#dlq-filters button[type=submit]");
  await page.waitForSelector("#letters[data-total='3']");
  await shot(page, "dead-letters");
  await page.click("#letters button[data-replay] >> nth=0");
  await page.waitForSelector("#dlq-action:has-text('replayed as')");
  await page.waitForSelector("#letters[data-total='2']");

  step = "replay all matching replays every one after a confirmation with the count";
  await page.click("#replay-all");
  await page.waitForSelector("#dlq-action:has-text('replayed 2 of 2')");
  check(globalThis.lastDialog === "Replay all 2 matching dead letters?", `the confirmation (${globalThis.lastDialog})`);
  await page.waitForSelector("#letters[data-total='0']");

  step = "purge all matching deletes them after a confirmation with the count";
  await page.fill("#dlq-filters input[name=agent_type]", "fail");
  await page.click("#dlq-filters button[type=submit]");
  await page.waitForSelector("#letters[data-total='1']");
  await page.click("#purge-all");
  await page.waitForSelector("#dlq-action:has-text('purged 1 of 1')");
  check(globalThis.lastDialog === "Purge all 1 matching dead letters for good?", `the confirmation (${globalThis.lastDialog})`);
  await page.waitForSelector("#letters[data-total='0']");

  step = "the workers and schedules pages";
  await page.click("a[href='#/workers']");
  await page.waitForSelector("#workers tr td");
  // Each worker says which of its agents are declared ones, and how they are reached.
  await page.waitForSelector("#workers th:has-text('declared agents')");
  await shot(page, "workers");
  await page.click("a[href='#/schedules']");
  await page.waitForSelector("#view[data-view='schedules'] table");
  await shot(page, "schedules");

  step = "logging out forgets the token";
  await page.click("#logout");
  await page.reload();
  await page.waitForSelector("#login:not([hidden])");
  console.log(JSON.stringify({ ok: true, timings }));
} catch (error) {
  console.error(`${step}: ${error.message}`);
  for (const page of browser.contexts().flatMap((c) => c.pages())) await shot(page, "failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
