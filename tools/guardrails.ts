/**
 * The house rules of the repository's layout, as a checker (docs/architecture.md, "House
 * rules"). The core, {@link checkRepository}, is pure: it takes the files' paths and texts and
 * the workspace members, and returns every violation; {@link readRepository} reads the real
 * tree for it. tools/guardrails_test.ts runs both, on synthetic trees and on this one.
 *
 * Imports are read from Deno's own syntax tree (through a lint plugin run with
 * `Deno.lint.runPlugin`, so only under `deno test`), never by a regex over the text: comments,
 * strings and regular expressions that look like imports cannot mislead it. A specifier is
 * resolved as Deno resolves it in this workspace: relative paths against the importing file,
 * `@duet/<member>[/<export>]` to the member whose deno.json "name" it is; everything else
 * (`npm:`, `node:`, the import map's bare names) is outside the repository.
 *
 * @module
 */

/** The rules, each with its own id in a report. */
export type RuleId =
  | "package-imports-app"
  | "app-imports-app"
  | "foreign-testdata"
  | "knows-cli"
  | "foreign-reference"
  | "missing-document"
  | "missing-anchor"
  | "missing-file"
  | "unparsable";

/** What each rule asks, in the words a report uses. */
export const RULES: Record<RuleId, string> = {
  "package-imports-app": "packages never import apps/ or bench/",
  "app-imports-app": "apps never import other apps (only apps/cli composes them)",
  "foreign-testdata": "code in apps/ and packages/ never reaches into another part's testdata/ " +
    "(shared fixtures go in packages/testkit, or a part's own `testing` export)",
  "knows-cli": "only apps/cli, bench/ and tools/ know the CLI's paths (apps/cli): packages " +
    "(the testkit too) and the other apps do not run the command by its file",
  "foreign-reference": "nothing points outside the repository (a sibling checkout, notes kept " +
    "elsewhere)",
  "missing-document": "every referenced .md document exists in the repository",
  "missing-anchor": "every link to a section (`doc.md#section`, `#section`) names a heading " +
    "of that document, as GitHub makes its anchors",
  "missing-file": "every source file that a document or a comment names (`name.ts`, " +
    "`dir/name.py`) exists in the repository",
  "unparsable": "every source file parses (the import rules cannot read one that does not)",
};

/** One broken rule: where, and what. */
export interface Violation {
  /** The rule broken. */
  rule: RuleId;
  /** The file, relative to the repository's root, with `/` separators. */
  file: string;
  /** The 1-based line. */
  line: number;
  /** What was found there (the specifier, the reference). */
  detail: string;
}

/** A file of the repository: its path relative to the root (`/` separators) and its text. */
export interface RepoFile {
  /** Relative to the repository's root, e.g. `apps/chat/server.ts`. */
  path: string;
  /** The whole text. */
  text: string;
}

/** What the checker needs to know of a repository. */
export interface Repository {
  /** The files to check (source, documentation, configuration). */
  files: RepoFile[];
  /** Workspace members by their deno.json "name", e.g. `@duet/chat` -> `apps/chat`. */
  members: Map<string, string>;
  /**
   * Whether a path (relative to the root, no trailing `/`) is a file or directory of the
   * repository. Defaults to the paths of `files` and their directories.
   */
  exists?: (path: string) => boolean;
  /** Every file's path, text or not (for names of files): defaults to the paths of `files`. */
  paths?: readonly string[];
}

/** How a file refers to another: the kinds of reference the syntax tree shows. */
export type ReferenceKind =
  | "import"
  | "dynamic-import"
  | "type-import"
  | "require"
  | "url"
  | "string";

/** A string in code, with how it is used. */
export interface Reference {
  /** `import`/`export ... from`, `import()`, `import("x").T`, `require()`, `new URL(x, import.meta.url)`, or any other string. */
  kind: ReferenceKind;
  /** The text; a template literal's parts joined with `${…}`. */
  value: string;
  /** The 1-based line where it starts. */
  line: number;
}

/** Notes kept outside the repository that code and documents used to point at. */
export const FOREIGN_DOCUMENTS: readonly RegExp[] = [/\.\.\/shared\b/, /\bstack[-]facts\b/];

const CODE = /\.(ts|tsx|mts|js|mjs|jsx)$/;

/** Whether the import rules apply to a file: code under apps/, packages/, bench/ or tools/. */
export function isCode(path: string): boolean {
  return CODE.test(path) && /^(apps|packages|bench|tools)\//.test(path);
}

/** The 1-based line of a character offset in `text`. */
export function lineAt(text: string, offset: number): number {
  let line = 1;
  for (let i = text.indexOf("\n"); i !== -1 && i < offset; i = text.indexOf("\n", i + 1)) line++;
  return line;
}

/** Every string of a source file, classified, from Deno's syntax tree. Only under `deno test`. */
export function extractReferences(path: string, text: string): Reference[] {
  const found: Reference[] = [];
  const plugin: Deno.lint.Plugin = {
    name: "guardrails",
    rules: {
      references: {
        create() {
          // deno-lint-ignore no-explicit-any -- parents are told apart by their type
          const kindOf = (node: any): ReferenceKind => {
            const parent = node.parent;
            switch (parent?.type) {
              case "ImportDeclaration": // attributes' strings have ImportAttribute parents
              case "ExportAllDeclaration":
              case "ExportNamedDeclaration":
                return "import";
              case "ImportExpression":
                return "dynamic-import";
              case "TSLiteralType":
                return parent.parent?.type === "TSImportType" ? "type-import" : "string";
              case "TSExternalModuleReference":
                return "require";
              case "CallExpression":
                return parent.callee?.type === "Identifier" && parent.callee.name === "require" &&
                    parent.arguments?.[0]?.range?.[0] === node.range[0]
                  ? "require"
                  : "string";
              case "NewExpression": {
                const base = parent.arguments?.[1];
                return parent.callee?.type === "Identifier" && parent.callee.name === "URL" &&
                    parent.arguments?.[0]?.range?.[0] === node.range[0] &&
                    base?.type === "MemberExpression" && base.object?.type === "MetaProperty"
                  ? "url"
                  : "string";
              }
              default:
                return "string";
            }
          };
          return {
            Literal(node) {
              if (typeof node.value !== "string") return;
              found.push({
                kind: kindOf(node),
                value: node.value,
                line: lineAt(text, node.range[0]),
              });
            },
            TemplateLiteral(node) {
              const value = node.quasis.map((q) => q.cooked ?? q.raw).join("${…}");
              found.push({ kind: kindOf(node), value, line: lineAt(text, node.range[0]) });
            },
          };
        },
      },
    },
  };
  Deno.lint.runPlugin(plugin, path, text);
  return found;
}

/** `a/b/../c` -> `a/c`; `null` when it climbs above the root. */
export function normalize(path: string): string | null {
  const out: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      if (out.length === 0) return null;
      out.pop();
    } else out.push(segment);
  }
  return out.join("/");
}

function dirOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash === -1 ? "" : path.slice(0, slash);
}

/**
 * Where a specifier imported by `from` leads, relative to the root; `null` for anything
 * outside the repository (npm:, node:, import-map names) and `undefined` for a relative path
 * that climbs above the root.
 */
export function resolveSpecifier(
  specifier: string,
  from: string,
  members: Map<string, string>,
): string | null | undefined {
  if (specifier.startsWith("./") || specifier.startsWith("../")) {
    return normalize(`${dirOf(from)}/${specifier}`) ?? undefined;
  }
  const member = specifier.match(/^(@[^/]+\/[^/]+)(\/.*)?$/);
  if (member && members.has(member[1]!)) return members.get(member[1]!)!;
  return null;
}

/** The part a path belongs to: `apps/chat`, `packages/net`, `bench/chat`, `tools`, or its top directory. */
export function partOf(path: string): string {
  const [top, second] = path.split("/");
  if ((top === "apps" || top === "packages" || top === "bench") && second) {
    return `${top}/${second}`;
  }
  return top ?? "";
}

const TESTDATA_PATH = /(?<![\w@.\-/])(?:[\w@.\-]+\/)*testdata\/[\w@.\-/]*/g;

/** Paths into a testdata/ directory that a string names, resolved relative to the root. */
export function testdataPaths(value: string, from: string): string[] {
  const paths: string[] = [];
  for (const segment of value.split("${…}")) {
    for (const match of segment.matchAll(TESTDATA_PATH)) {
      const token = match[0];
      const rooted = /^(apps|packages|bench|tools)\//.test(token);
      const resolved = rooted ? normalize(token) : normalize(`${dirOf(from)}/${token}`);
      if (resolved !== null) paths.push(resolved);
    }
  }
  return paths;
}

/** URLs blanked out, so that a path inside one is not taken for a repository path. */
function withoutUrls(text: string): string {
  return text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s)>\]"'`]*/gi, (url) => " ".repeat(url.length));
}

/** Every `.md` path a text names: markdown links, backtick paths, and bare paths. */
export function documentReferences(
  text: string,
): { path: string; offset: number; link: boolean }[] {
  const found: { path: string; offset: number; link: boolean }[] = [];
  const seen = new Set<number>();
  const clean = withoutUrls(text);
  for (const match of clean.matchAll(/\]\(\s*<?([^)\s>#]+\.md)(?:#[^)\s>]*)?>?\s*\)/g)) {
    const offset = match.index! + match[0].indexOf(match[1]!);
    seen.add(offset);
    found.push({ path: match[1]!, offset, link: true });
  }
  for (const match of clean.matchAll(/(?<![\w./-])((?:\.{1,2}\/)*[\w-][\w.\-/]*\.md)(?![\w-])/g)) {
    if (seen.has(match.index!)) continue;
    found.push({ path: match[1]!, offset: match.index!, link: false });
  }
  return found;
}

function defaultExists(files: RepoFile[]): (path: string) => boolean {
  const paths = new Set<string>([""]);
  for (const { path } of files) {
    for (let p = path; p !== ""; p = dirOf(p)) paths.add(p);
  }
  return (path) => paths.has(path);
}

/** Every violation of the house rules in `repo`, in file and line order. */
export function checkRepository(repo: Repository): Violation[] {
  const exists = repo.exists ?? defaultExists(repo.files);
  const violations: Violation[] = [];
  const add = (rule: RuleId, file: string, line: number, detail: string) =>
    violations.push({ rule, file, line, detail });
  const texts = new Map(repo.files.map((f) => [f.path, f.text]));
  const index = fileIndex(repo, exists);
  for (const file of repo.files) {
    if (isCode(file.path)) checkCode(file, repo.members, add);
    checkText(file, exists, add);
    checkAnchors(file, texts, add);
    checkSourceFiles(file, index, add);
  }
  return violations.sort((a, b) =>
    a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.rule.localeCompare(b.rule)
  );
}

type Add = (rule: RuleId, file: string, line: number, detail: string) => void;

function checkCode(file: RepoFile, members: Map<string, string>, add: Add): void {
  const part = partOf(file.path);
  let refs: Reference[];
  try {
    refs = extractReferences(file.path, file.text);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const line = Number(message.match(/\n\s*(\d+) \|/)?.[1] ?? 1);
    add("unparsable", file.path, line, message.split("\n")[0]!.trim());
    return;
  }
  for (const ref of refs) {
    if (ref.kind !== "string") checkImport(file.path, part, ref, members, add);
    const cliPath = /(^|[^\w])apps\/cli\b/.test(ref.value);
    if (knowsNoCli(part) && ref.kind === "string" && cliPath) {
      add("knows-cli", file.path, ref.line, JSON.stringify(ref.value));
    }
    // bench/ and tools/ are developer scripts outside the product: they may drive a part's
    // fixtures (an echo server, an older checkout's client). Inside apps/ and packages/, a
    // part's fixtures are its own, or published on purpose as its `testing` export.
    const inProduct = file.path.startsWith("apps/") || file.path.startsWith("packages/");
    for (const target of inProduct ? testdataPaths(ref.value, file.path) : []) {
      if (partOf(target) !== part) {
        add("foreign-testdata", file.path, ref.line, `${JSON.stringify(ref.value)} -> ${target}`);
      }
    }
  }
}

function checkImport(
  path: string,
  part: string,
  ref: Reference,
  members: Map<string, string>,
  add: Add,
): void {
  const target = ref.kind === "url" && !ref.value.startsWith(".")
    ? resolveSpecifier(`./${ref.value}`, path, members)
    : resolveSpecifier(ref.value, path, members);
  if (target === undefined) {
    add(
      "foreign-reference",
      path,
      ref.line,
      `${ref.kind} ${JSON.stringify(ref.value)} leaves the repository`,
    );
    return;
  }
  if (target === null) return;
  const detail = `${ref.kind} ${JSON.stringify(ref.value)} -> ${target}`;
  const targetPart = partOf(target);
  if (part.startsWith("packages/") && /^(apps|bench)(\/|$)/.test(target)) {
    add("package-imports-app", path, ref.line, detail);
  }
  if (
    part.startsWith("apps/") && part !== "apps/cli" && targetPart.startsWith("apps/") &&
    targetPart !== part
  ) add("app-imports-app", path, ref.line, detail);
  if (part === "packages/testkit" && /^apps\/cli(\/|$)/.test(target)) {
    add("knows-cli", path, ref.line, detail);
  }
}

/** Parts that must not name the CLI's files: every package, every app but the CLI. */
function knowsNoCli(part: string): boolean {
  return part.startsWith("packages/") || (part.startsWith("apps/") && part !== "apps/cli");
}

/**
 * The anchor GitHub gives a heading: lowercased, punctuation dropped (letters, digits,
 * spaces, `-` and `_` kept), spaces made `-`.
 */
export function headingSlug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replace(/ /g, "-");
}

/** Every anchor a markdown text offers: its headings' slugs, repeats numbered as GitHub does. */
export function headingAnchors(text: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  let fenced = false;
  for (const line of text.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const heading = fenced ? null : line.match(/^#{1,6}\s+(.*?)\s*#*\s*$/);
    if (!heading) continue;
    const slug = headingSlug(heading[1]!);
    const seen = counts.get(slug) ?? 0;
    counts.set(slug, seen + 1);
    anchors.add(seen ? `${slug}-${seen}` : slug);
  }
  return anchors;
}

/** Markdown links to a section: `[x](doc.md#part)` (path given) or `[x](#part)` (path ""). */
export function anchorReferences(
  text: string,
): { path: string; anchor: string; offset: number }[] {
  const found: { path: string; anchor: string; offset: number }[] = [];
  for (const match of withoutUrls(text).matchAll(/\]\(\s*<?([^)\s>#]*\.md|)#([^)\s>]+)>?\s*\)/g)) {
    found.push({ path: match[1]!, anchor: match[2]!, offset: match.index! });
  }
  return found;
}

const SOURCE_FILE = /(?<![\w./\-$}])((?:\.{1,2}\/)*[\w-][\w.\-/]*\.(?:tsx?|py|go|sh))(?![\w-])/g;

/**
 * Source files a text names: every one in a markdown document, only those in comments in
 * code (its strings are paths the code makes, tested by running it).
 */
export function sourceFileReferences(
  path: string,
  text: string,
): { path: string; offset: number }[] {
  const clean = withoutUrls(text);
  const found: { path: string; offset: number }[] = [];
  const markdown = path.endsWith(".md");
  let offset = 0;
  for (const line of clean.split("\n")) {
    const comment = markdown ? 0 : line.search(/(^\s*(\/\/|\*|\/\*)|\s\/\/\s)/);
    if (comment !== -1) {
      for (const match of line.slice(comment).matchAll(SOURCE_FILE)) {
        found.push({ path: match[1]!, offset: offset + comment + match.index! });
      }
    }
    offset += line.length + 1;
  }
  return found;
}

function checkAnchors(file: RepoFile, texts: Map<string, string>, add: Add): void {
  if (!file.path.endsWith(".md")) return;
  for (const ref of anchorReferences(file.text)) {
    const target = ref.path === "" ? file.path : normalize(`${dirOf(file.path)}/${ref.path}`);
    const text = target === null ? undefined : texts.get(target);
    if (text === undefined) continue; // a missing document is its own violation
    if (!headingAnchors(text).has(decodeURIComponent(ref.anchor))) {
      add("missing-anchor", file.path, lineAt(file.text, ref.offset), `${ref.path}#${ref.anchor}`);
    }
  }
}

/**
 * Names that stand for a file rather than name one: a placeholder (`NAME.ts`, `my_server.ts`,
 * `your_app.ts`) or a suffix convention (`_test.ts`, `_bench.ts`).
 */
export function isFileNamePattern(path: string): boolean {
  const base = path.slice(path.lastIndexOf("/") + 1);
  const stem = base.slice(0, base.indexOf("."));
  return /^[A-Z][A-Z_]*$/.test(stem) || /^(my|your)_/.test(stem) || /^_(test|bench)$/.test(stem);
}

function checkSourceFiles(file: RepoFile, files: FileIndex, add: Add): void {
  for (const ref of sourceFileReferences(file.path, file.text)) {
    if (isFileNamePattern(ref.path)) continue;
    const here = normalize(`${dirOf(file.path)}/${ref.path}`);
    // "./packages/x.ts" in a document is usually said from the root, where commands run.
    const fromRoot = ref.path.startsWith("../") ? null : normalize(ref.path);
    if ((here !== null && files.exists(here)) || (fromRoot !== null && files.exists(fromRoot))) {
      continue;
    }
    // A name alone, or the end of a path ("commands/dlog.ts"): some file of the repository.
    if (fromRoot !== null && files.endings.has(fromRoot)) continue;
    add("missing-file", file.path, lineAt(file.text, ref.offset), ref.path);
  }
}

/** The repository's paths, and every tail of them ("b/c.ts" and "c.ts" of "a/b/c.ts"). */
interface FileIndex {
  exists: (path: string) => boolean;
  endings: Set<string>;
}

function fileIndex(repo: Repository, exists: (path: string) => boolean): FileIndex {
  const endings = new Set<string>();
  for (const path of repo.paths ?? repo.files.map((f) => f.path)) {
    const parts = path.split("/");
    for (let i = 0; i < parts.length; i++) endings.add(parts.slice(i).join("/"));
  }
  return { exists, endings };
}

function checkText(file: RepoFile, exists: (path: string) => boolean, add: Add): void {
  for (const pattern of FOREIGN_DOCUMENTS) {
    const global = new RegExp(pattern.source, "g");
    for (const match of file.text.matchAll(global)) {
      add(
        "foreign-reference",
        file.path,
        lineAt(file.text, match.index!),
        lineText(file.text, match.index!),
      );
    }
  }
  for (const ref of documentReferences(file.text)) {
    const here = normalize(`${dirOf(file.path)}/${ref.path}`);
    const fromRoot = ref.link || ref.path.startsWith(".") ? null : normalize(ref.path);
    if ((here !== null && exists(here)) || (fromRoot !== null && exists(fromRoot))) continue;
    const rule = here === null ? "foreign-reference" : "missing-document";
    add(rule, file.path, lineAt(file.text, ref.offset), ref.path);
  }
}

function lineText(text: string, offset: number): string {
  const start = text.lastIndexOf("\n", offset) + 1;
  const end = text.indexOf("\n", offset);
  return text.slice(start, end === -1 ? undefined : end).trim();
}

/**
 * Whether a lint diagnostic starting at `offset` is silenced in `text` the way `deno lint` reads
 * it: `// deno-lint-ignore RULE` on the line before, or `// deno-lint-ignore-file` (bare, or
 * naming RULE) at the top. `Deno.lint.runPlugin` does not apply these itself.
 */
export function lintIgnored(text: string, offset: number, rule: string): boolean {
  const names = (list: string | undefined) =>
    (list ?? "").split("--")[0]!.trim().split(/[\s,]+/).filter(Boolean);
  const file = text.match(
    /^(?:\s*(?:\/\/[^\n]*|\/\*[\s\S]*?\*\/)\s*)*?\/\/\s*deno-lint-ignore-file\b([^\n]*)/,
  );
  if (file) {
    const rules = names(file[1]);
    if (rules.length === 0 || rules.includes(rule)) return true;
  }
  const lineStart = text.lastIndexOf("\n", offset - 1) + 1;
  if (lineStart === 0) return false;
  const previousStart = text.lastIndexOf("\n", lineStart - 2) + 1;
  const previous = text.slice(previousStart, lineStart - 1);
  const ignore = previous.match(/^\s*\/\/\s*deno-lint-ignore(?!-file)\b(.*)$/);
  return ignore !== null && names(ignore[1]).includes(rule);
}

/** Formats violations one per line, grouped under their rule. */
export function formatViolations(violations: Violation[]): string {
  const lines: string[] = [];
  for (const rule of Object.keys(RULES) as RuleId[]) {
    const own = violations.filter((v) => v.rule === rule);
    if (own.length === 0) continue;
    lines.push(`${rule} (${RULES[rule]}): ${own.length}`);
    for (const v of own) lines.push(`  ${v.file}:${v.line}  ${v.detail}`);
  }
  return lines.join("\n");
}

/**
 * What the real tree's check leaves out: generated and vendored files, and the checker and its
 * test themselves, whose synthetic trees are violations on purpose.
 */
export const SKIPPED: readonly RegExp[] = [
  /^tools\/guardrails(_test)?\.ts$/,
  /^\.git\//,
  /(^|\/)node_modules\//,
  /^\.cache\//,
  /^tmp\//,
  /^deno\.lock$/,
  /^packages\/wsping\/dist\//,
  /^packages\/wsping\/_wasm\.ts$/,
  /^bench\/anchors\/syncpoint-tokio\/target\//,
];

const TEXT =
  /\.(ts|tsx|mts|js|mjs|jsx|md|json|jsonc|ya?ml|html|py|sh|conf|toml|go|rs)$|(^|\/)(Dockerfile|run)$/;

/** Reads the repository at `root` (a directory URL): its text files and workspace members. */
export async function readRepository(
  root: URL,
): Promise<Repository & { exists: (p: string) => boolean }> {
  const files: RepoFile[] = [];
  const all = new Set<string>([""]);
  async function walk(dir: string): Promise<void> {
    for await (const entry of Deno.readDir(new URL(dir || ".", root))) {
      const path = dir ? `${dir}/${entry.name}` : entry.name;
      const skipped = SKIPPED.some((s) => s.test(entry.isDirectory ? `${path}/` : path));
      // A skipped file still exists (a generated module, the checker): documents may name it.
      if (skipped && entry.isFile) all.add(path);
      if (skipped) continue;
      all.add(path);
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile && TEXT.test(path)) {
        try {
          files.push({ path, text: await Deno.readTextFile(new URL(path, root)) });
        } catch (error) {
          if (!(error instanceof Deno.errors.NotFound)) throw error; // removed meanwhile
        }
      }
    }
  }
  await walk("");
  files.sort((a, b) => (a.path < b.path ? -1 : 1));
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const members = new Map<string, string>();
  for (const member of config.workspace as string[]) {
    const dir = normalize(member)!;
    const name = JSON.parse(await Deno.readTextFile(new URL(`${dir}/deno.json`, root))).name;
    if (typeof name === "string") members.set(name, dir);
  }
  return { files, members, exists: (path) => all.has(path), paths: [...all] };
}
