// deno bench packages/wsping/wsping_bench.ts -- figures in docs/benchmarks.md.
// wsPing (state machine in WebAssembly) against a plain TypeScript ping doing the same
// work (timeout timer, listener clean-up, close) on the same runtime and server. The echo
// server runs in its own process so it does not share this event loop.
import { wsPing } from "./mod.ts";
import { machineBytes } from "./machine.ts";
import { plainPing } from "./testdata/plain_ping.ts";

const server = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", new URL("./testdata/echo_server.ts", import.meta.url).pathname],
  stdout: "piped",
}).spawn();
const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
const { ws } = JSON.parse((await reader.read()).value!);
reader.releaseLock();
globalThis.addEventListener("unload", () => server.kill());
const endpoint = `${ws}/echo`;

Deno.bench("plain TypeScript ping (connect, send, first reply, close)", {
  group: "ping",
  baseline: true,
}, async () => {
  await plainPing(endpoint, "ping");
});
Deno.bench("wsPing (WebAssembly state machine)", { group: "ping" }, async () => {
  await wsPing(endpoint, "ping");
});

const bytes = machineBytes();
Deno.bench(
  "instantiate the embedded module (compile + instantiate)",
  { group: "load" },
  async () => {
    await WebAssembly.instantiate(await WebAssembly.compile(bytes as BufferSource), {});
  },
);
