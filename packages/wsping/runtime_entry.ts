// The shared suite under node:test, for Node and Bun. Bundled by runtimes_test.ts with
// the plain ES module build (dist/wsping.mjs) inlined, so it tests what Node and Bun users
// import. WSPING_ECHO holds the echo server's URLs; WSPING_WEBSOCKET=ws makes it pass npm
// ws's constructor (Node 20 without --experimental-websocket).
import { test } from "node:test";
import process from "node:process";
import { WebSocket as WsWebSocket } from "ws";
// @ts-types="./mod.ts"
import { wsPing, WsPingError } from "./dist/wsping.mjs";
import { cases, type SuiteContext } from "./suite.ts";

const echo = JSON.parse(process.env["WSPING_ECHO"] ?? "null") as
  | { ws: string; http: string }
  | null;
if (!echo) throw new Error("WSPING_ECHO is not set: run through packages/wsping/runtimes_test.ts");
const useWs = process.env["WSPING_WEBSOCKET"] === "ws";

const ctx: SuiteContext = {
  ...echo,
  wsPing,
  WsPingError,
  ...(useWs ? { WebSocket: WsWebSocket as unknown as SuiteContext["WebSocket"] } : {}),
};

for (const testCase of cases) test(testCase.name, () => testCase.run(ctx));

if (useWs) {
  test("wsPing() without options.WebSocket on a runtime without one rejects with no_websocket", async () => {
    if ((globalThis as { WebSocket?: unknown }).WebSocket) return; // this runtime has one
    try {
      await wsPing(`${echo.ws}/echo`, "x");
      throw new Error("expected no_websocket");
    } catch (error) {
      if (!(error instanceof WsPingError) || error.code !== "no_websocket") throw error;
    }
  });
}
