// The dashboard in a real browser: Debian's headless Chromium, driven over the DevTools protocol
// (playwright-core, pointed at /usr/bin/chromium: nothing is downloaded), against a running
// `dspy-storage serve --auth-file` on the backend named by DSPY_STORAGE_TEST_BACKEND.
//
// It signs in through the form, checks that a stored program's signature, versions, aliases,
// prompt text and chart appear, moves an alias with the page's form and sees the move land, and
// sees a stale move (another writer moved the alias meanwhile) reported as a conflict, sees an
// alias's promotion policy on the signature page, a move the policy refuses reported with the
// failed requirement, and the alias's history page. Hostile
// text in the program must show as text and run nothing. Screenshots of each page go to
// target/ui-screenshots/<backend>/.
//
//   DSPY_STORAGE_BIN            the dspy-storage binary
//   DSPY_STORAGE_TEST_BACKEND   embedded | aws (aws: AWS_ENDPOINT_URL names the local AWS)
//   DSPY_STORAGE_SCREENSHOTS    where the screenshots go
//   DSPY_STORAGE_AWS_TEST_LOG   (optional) a line per test that ran on the aws backend

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.DSPY_STORAGE_BIN;
const BACKEND = process.env.DSPY_STORAGE_TEST_BACKEND ?? "embedded";
const SHOTS = join(process.env.DSPY_STORAGE_SCREENSHOTS ?? "target/ui-screenshots", BACKEND);
const WRITER = "browser-writer-token";
const OTHER = "other-writer-token";
const ADMIN = "browser-admin-token";
const SIG = "qa.BrowserAnswer";
const HOSTILE = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">`;

let server, base, dir, browser, page, consoleErrors = [], serverLog = "";

function sha256(s) {
  return createHash("sha256").update(s).digest("hex");
}

async function startServer() {
  dir = mkdtempSync(join(tmpdir(), "dspy-ui-"));
  const auth = join(dir, "tokens.toml");
  writeFileSync(
    auth,
    [[WRITER, "writer"], [OTHER, "writer"], [ADMIN, "admin"]]
      .map(([t, role]) => `[[token]]\nname = "${t}"\nsha256 = "${sha256(t)}"\nprojects = ["*"]\nrole = "${role}"\n`)
      .join("\n"),
  );
  const id = randomUUID().replaceAll("-", "").slice(0, 20);
  const backendArgs =
    BACKEND === "aws"
      ? ["--backend", "aws", "--table", `dspy-ui-${id}`, "--bucket", `dspy-ui-${id}`, "--create"]
      : ["--backend", "embedded", "--data-dir", join(dir, "data")];
  server = spawn(BIN, ["serve", ...backendArgs, "--addr", "127.0.0.1:0", "--auth-file", auth], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  serverLog = "";
  base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start:\n${serverLog}`)), 90_000);
    server.stderr.on("data", (chunk) => {
      serverLog += chunk;
      // The whole line: stderr arrives in chunks, and a chunk may end inside the address (a
      // run took `http://127` for the base and its requests went nowhere).
      const m = /dspy-storage listening on (http:\/\/[^\s]+)\n/.exec(serverLog);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    server.on("error", (e) => reject(e));
    server.on("exit", (code) => reject(new Error(`serve exited (${code}):\n${serverLog}`)));
  });
}

async function api(method, path, body, token = WRITER) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch (e) {
    // Every answer of the API is JSON (API.md): say what came back instead, and what the server
    // logged, so that a failure here can be diagnosed from the CI log alone.
    throw new Error(
      `${method} ${path}: ${res.status} (server: ${res.headers.get("server")}) with a body that is not JSON (${e.message}): ` +
        `${JSON.stringify(text.slice(0, 2000))}\nserver log (tail):\n${serverLog.slice(-4000)}`,
    );
  }
  return { status: res.status, body: parsed };
}

function program(step) {
  return {
    predict: {
      demos: [{ question: "Capital of France?", reasoning: "It is known.", answer: `Paris ${step}` }],
      signature: {
        instructions: `Answer the question in one word (revision ${step}). ${HOSTILE}`,
        fields: [
          { prefix: "Question:", description: "a trivia question" },
          { prefix: "Reasoning: Let's think step by step in order to", description: "${reasoning}" },
          { prefix: "Answer:", description: "one word" },
        ],
      },
      lm: null,
    },
    metadata: { dependency_versions: { python: "3.11", dspy: "3.0.3", cloudpickle: "3.0" } },
  };
}

async function seed() {
  const ids = [];
  for (const [i, acc] of [0.82, 0.87, 0.91].entries()) {
    const r = await api("POST", "/programs", {
      program: program(i),
      metadata: { signature: SIG, optimization_method: "miprov2", performance: { accuracy: acc }, tags: ["browser", "<b>bold?</b>"] },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    ids.push(r.body.id);
  }
  const day = 24 * 3600 * 1000;
  const records = Array.from({ length: 20 }, (_, k) => ({
    metrics: { accuracy: 0.85 + 0.003 * k, latency: 1.2 - 0.01 * k },
    timestamp: new Date(Date.now() - (20 - k) * day).toISOString(),
  }));
  assert.equal((await api("POST", `/programs/${ids[2]}/metrics`, { records })).status, 201);
  assert.equal((await api("PUT", `/signatures/${SIG}/aliases/production`, { version: "1.0.1" })).status, 200);
  return ids;
}

async function shot(name) {
  await page.waitForFunction(() => [...document.images].every((img) => img.complete));
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function imageLoaded(selector) {
  return page.$eval(selector, (img) => img.complete && img.naturalWidth > 0);
}

async function aliasVersion(alias) {
  const r = await api("GET", `/signatures/${SIG}/aliases/${alias}`);
  return r.body.version;
}

let ids;

before(async () => {
  assert.ok(BIN, "DSPY_STORAGE_BIN names the dspy-storage binary");
  mkdirSync(SHOTS, { recursive: true });
  await startServer();
  ids = await seed();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function logAws(name) {
  const path = process.env.DSPY_STORAGE_AWS_TEST_LOG;
  if (BACKEND === "aws" && path) appendFileSync(path, `dashboard-browser\t${name}\taws\n`);
}

test("sign in, then the signatures, a signature, a program and its chart appear", async () => {
  await page.goto(`${base}/ui/`);
  assert.match(page.url(), /\/ui\/login\?next=/, "signed out: the sign-in form");
  await shot("login");
  await page.fill("input[name=token]", WRITER);
  await Promise.all([page.waitForURL(`${base}/ui/`), page.click("form#login button[type=submit]")]);
  const row = page.locator("#signatures tr", { hasText: SIG });
  assert.equal(await row.count(), 1);
  const rowText = await row.innerText();
  for (const want of ["1.0.2", "0.91", "3", "production → 1.0.1"]) assert.ok(rowText.includes(want), `${want} in ${rowText}`);
  await shot("signatures");

  await Promise.all([page.waitForURL(/\/ui\/signatures\//), row.locator("a").first().click()]);
  const versions = await page.locator("#version-table tbody tr").allInnerTexts();
  assert.equal(versions.length, 3);
  assert.ok(versions[1].includes("1.0.1") && versions[1].includes("production") && versions[1].includes("miprov2"), versions[1]);
  assert.ok(versions[2].includes("<b>bold?</b>"), "a tag shows as text");
  assert.ok(await imageLoaded("figure.chart img"), "the signature's chart loads");
  await shot("signature");

  await Promise.all([page.waitForURL(/\/ui\/programs\//), page.locator("#version-table a", { hasText: "1.0.2" }).click()]);
  const prompt = await page.locator("#prompt").innerText();
  assert.ok(prompt.includes("Answer the question in one word (revision 2)."), prompt);
  assert.ok(prompt.includes(HOSTILE), "the instructions' markup shows as text");
  assert.ok(prompt.includes("Paris 2") && prompt.includes("Question:"), "demos and fields");
  assert.ok((await page.locator("#facts").innerText()).includes("✓ verified"));
  assert.ok(await imageLoaded("#metrics figure.chart img"), "the program's chart loads");
  assert.equal(await page.locator("#history tbody tr").count(), 20);
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "no injected script ran");
  await Promise.all([page.waitForURL(/similar=1/), page.locator("#similar button").click()]);
  assert.equal(await page.locator("#similar tbody tr").count(), 2, "the two other versions are similar");
  await shot("program");

  await page.goto(`${base}/ui/diff/${SIG}?from=1.0.0&to=1.0.2`);
  assert.ok((await page.locator("table.sbs td.add").first().innerText()).includes("revision 2"));
  await shot("diff");
  await page.goto(`${base}/ui/search?q=${encodeURIComponent("method:miprov2 performance>0.85")}`);
  assert.equal(await page.locator("#results tbody tr").count(), 2);
  await shot("search");
  await page.goto(`${base}/ui/monitoring`);
  assert.ok((await page.locator("#figures").innerText()).includes("3"));
  await shot("monitoring");
  assert.deepEqual(consoleErrors, [], "no console error (a CSP violation would be one)");
  logAws("pages");
});

test("the alias form moves the alias, and a stale move is reported as a conflict", async () => {
  await page.goto(`${base}/ui/signatures/${SIG}`);
  const form = page.locator("#aliases tr[data-alias=production] form").first();
  await form.locator("input[name=version]").fill("1.0.2");
  await Promise.all([page.waitForURL(/done=moved/), form.locator("button").click()]);
  assert.ok((await page.locator(".notice.ok").innerText()).includes("Alias production now points at 1.0.2."));
  assert.equal(await aliasVersion("production"), "1.0.2", "the move landed");
  assert.ok((await page.locator("#aliases tr[data-alias=production]").innerText()).includes("1.0.2"));

  // The page still says 1.0.2; another writer moves the alias meanwhile.
  const other = await api("PUT", `/signatures/${SIG}/aliases/production`, { version: "1.0.0", expected_version: "1.0.2" }, OTHER);
  assert.equal(other.status, 200);
  const stale = page.locator("#aliases tr[data-alias=production] form").first();
  await stale.locator("input[name=version]").fill("1.0.1");
  const [response] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), stale.locator("button").click()]);
  assert.equal(response.status(), 409);
  const notice = await page.locator(".notice.error").innerText();
  assert.ok(notice.includes("409 conflict"), notice);
  assert.equal(await aliasVersion("production"), "1.0.0", "the other writer's move stands");
  assert.ok((await page.locator("#aliases tr[data-alias=production]").innerText()).includes("1.0.0"), "the page shows the current target");
  await shot("alias-conflict");
  logAws("alias");
});

test("an alias's policy is shown, a refused move names the failed requirement, and the history lists it", async () => {
  // An admin sets a gate on `canary`; a writer sets it to 1.0.2 (20 records, mean 0.8785: passes).
  const policy = { require: { metric: "accuracy", min: 0.85, min_records: 5 } };
  assert.equal((await api("PUT", `/signatures/${SIG}/aliases/canary/policy`, policy, ADMIN)).status, 200);
  assert.equal((await api("PUT", `/signatures/${SIG}/aliases/canary`, { version: "1.0.2" })).status, 200);
  await page.goto(`${base}/ui/signatures/${SIG}`);
  const row = page.locator("#aliases tr[data-alias=canary]");
  assert.ok((await row.locator("td.policy").innerText()).includes("gate: accuracy mean ≥ 0.85, ≥ 5 records"));
  // 1.0.0 has no metric records: the page answers 409 with the failed requirement.
  const form = row.locator("form").first();
  await form.locator("input[name=version]").fill("1.0.0");
  const [response] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), form.locator("button").click()]);
  assert.equal(response.status(), 409);
  const notice = await page.locator(".notice.error").innerText();
  assert.ok(notice.includes("409 policy_violation"), notice);
  assert.ok(notice.includes("accuracy has 0 records < min_records 5"), notice);
  assert.equal(await aliasVersion("canary"), "1.0.2", "the refused move changed nothing");
  await shot("alias-refused");
  // The history page: the refusal (with its gate), the move, the policy change; newest first.
  await page.goto(`${base}/ui/signatures/${SIG}`);
  await Promise.all([page.waitForURL(/aliases\/canary\/history/), page.locator("#aliases tr[data-alias=canary] a", { hasText: "history" }).click()]);
  const actions = await page.locator("#alias-history tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.action));
  assert.deepEqual(actions, ["refused", "move", "policy_set"]);
  const refused = await page.locator("#alias-history tbody tr").first().innerText();
  assert.ok(refused.includes("browser-writer-token") && refused.includes("failed: accuracy has 0 records"), refused);
  await shot("alias-history");
  // The two 409 answers (the stale move above, the refused move) are the only console errors:
  // Chromium logs every non-2xx page load; a CSP violation would show here too.
  const others = consoleErrors.filter((e) => !e.includes("status of 409 (Conflict)"));
  assert.deepEqual(others, [], "no other console error");
  logAws("policy");
});
