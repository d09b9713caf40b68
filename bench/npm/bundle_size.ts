// deno-lint-ignore-file no-console -- a benchmark: its output is the report
/**
 * What the npm packages cost a browser page: each packed with `deno task pack`'s code,
 * installed from its tarball, bundled by esbuild (minified, ES module) from an entry that
 * imports what a user imports, and gzipped (level 9, as `gzip -9`). The anchor, measured in
 * the same run: @noble/curves' secp256k1 alone, the curve dlog is built on.
 *
 * Usage: deno run -A bench/npm/bundle_size.ts
 * Prints a Markdown table for docs/benchmarks.md.
 *
 * @module
 */
import { gzipSync } from "node:zlib";
import { packAll } from "../../tools/pack.ts";
import { scriptOptions } from "../../tools/_options.ts";

const ESBUILD = "esbuild@0.28.2";

async function sh(command: string, args: string[], cwd: string): Promise<void> {
  const { code, stderr } = await new Deno.Command(command, {
    args,
    cwd,
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (code !== 0) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
  }
}

scriptOptions(import.meta.url, {}); // --help; no options
const work = await Deno.makeTempDir({ prefix: "duet-bundle-size-" });
try {
  const packed = await packAll(`${work}/tarballs`);
  await Deno.writeTextFile(
    `${work}/package.json`,
    JSON.stringify({ private: true, type: "module" }),
  );
  await sh("npm", ["install", "--no-audit", "--no-fund", ...packed.map((p) => p.tarball)], work);
  const entries: [string, string][] = [
    [
      "@noble/curves secp256k1 alone (anchor)",
      'import { secp256k1 } from "@noble/curves/secp256k1.js"; globalThis.x = secp256k1;',
    ],
    [
      "@duet/dlog: DLogProof, G, verifyBatch",
      'import { DLogProof, G, verifyBatch } from "@duet/dlog"; globalThis.x = [DLogProof, G, verifyBatch];',
    ],
    [
      "@duet/wsping: wsPing, WsPingError",
      'import { wsPing, WsPingError } from "@duet/wsping"; globalThis.x = [wsPing, WsPingError];',
    ],
  ];
  const sizes: { name: string; min: number; gzip: number }[] = [];
  for (const [i, [name, code]] of entries.entries()) {
    await Deno.writeTextFile(`${work}/entry${i}.mjs`, code);
    await sh("npx", [
      "--yes",
      ESBUILD,
      `entry${i}.mjs`,
      "--bundle",
      "--minify",
      "--format=esm",
      `--outfile=out${i}.js`,
    ], work);
    const bytes = await Deno.readFile(`${work}/out${i}.js`);
    sizes.push({ name, min: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length });
  }
  const anchor = sizes[0]!.gzip;
  console.log("| bundle | minified | minified + gzip | gzip − anchor |");
  console.log("| --- | --- | --- | --- |");
  for (const { name, min, gzip } of sizes) {
    console.log(
      `| ${name} | ${min} B | ${gzip} B | ${
        name.startsWith("@duet/dlog") ? `+${gzip - anchor} B` : ""
      } |`,
    );
  }
  for (const p of packed) {
    console.log(`\n${p.name}@${p.version}: tarball ${p.size} B, ${p.files.length} files`);
  }
} finally {
  await Deno.remove(work, { recursive: true });
}
