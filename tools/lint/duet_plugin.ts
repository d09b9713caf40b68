/**
 * duet's own lint rules, as a Deno lint plugin (`deno lint` loads it through "lint.plugins" in
 * the root deno.json; tests run it with `Deno.lint.runPlugin`, see duet_plugin_test.ts).
 *
 * - `duet/max-function-lines`: no function in apps/ or packages/ is longer than
 *   {@link MAX_FUNCTION_LINES} lines, from the line its function starts on to the line of its
 *   closing brace (or, for an arrow function with an expression body, the end of the
 *   expression). Every kind counts: declarations, expressions, arrow functions, methods,
 *   getters and setters, and the callbacks given to `Deno.test`. A long function hides its
 *   steps; split it into named ones (a pure core and a shell, as the rest of duet is built).
 *
 * Why a lint plugin and not a text scan: the plugin sees Deno's own syntax tree, so strings,
 * template literals, regular expressions and comments that contain braces cannot mislead it,
 * and `deno lint` reports it with the other rules, in the editor too.
 *
 * @module
 */

/** The most lines a function in apps/ or packages/ may span. */
export const MAX_FUNCTION_LINES = 100;

/** The repository's root, from where this file is (tools/lint/). */
const repoRoot = new URL("../../", import.meta.url).pathname;

/**
 * Whether the rule applies to a file: one under apps/ or packages/ of this repository, given
 * as an absolute path or relative to the repository's root.
 */
export function inFunctionLengthScope(fileName: string): boolean {
  const path = fileName.replaceAll("\\", "/");
  const relative = path.startsWith(repoRoot) ? path.slice(repoRoot.length) : path;
  return /^(apps|packages)\//.test(relative);
}

/** The 1-based line of a character offset in `text`. */
function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = text.indexOf("\n"); i !== -1 && i < offset; i = text.indexOf("\n", i + 1)) line++;
  return line;
}

/** What a function is called in a report: its own name or what holds it. */
export function functionName(node: Deno.lint.Node, text: string): string {
  // deno-lint-ignore no-explicit-any -- the parent's shape depends on its type, checked here
  const fn = node as any;
  if (fn.type === "FunctionDeclaration") return fn.id?.name ?? "export default function";
  if (fn.type === "FunctionExpression" && fn.id?.name) return fn.id.name;
  const parent = fn.parent;
  const source = (n: Deno.lint.Node) => text.slice(n.range[0], n.range[1]).replace(/\s+/g, " ");
  switch (parent?.type) {
    case "VariableDeclarator":
      return parent.id?.type === "Identifier" ? parent.id.name : "a destructured function";
    case "MethodDefinition":
    case "Property":
    case "PropertyDefinition": {
      const key = parent.key?.type === "Identifier" ? parent.key.name : source(parent.key);
      // deno-lint-ignore no-explicit-any -- a sibling property, e.g. Deno.test({ name, fn })
      const title = parent.parent?.properties?.find((p: any) =>
        p.key?.name === "name" && p.value?.type === "Literal" && typeof p.value.value === "string"
      );
      if (title) return `${key} of ${JSON.stringify(title.value.value)}`;
      const owner = parent.parent?.parent;
      return owner?.type === "ClassDeclaration" && owner.id?.name ? `${owner.id.name}.${key}` : key;
    }
    case "AssignmentExpression":
      return source(parent.left);
    case "CallExpression":
    case "NewExpression": {
      const first = parent.arguments?.[0];
      const title = first?.type === "Literal" && typeof first.value === "string"
        ? ` ${JSON.stringify(first.value)}`
        : "";
      return `callback of ${source(parent.callee).slice(0, 60)}${title}`;
    }
    default:
      return "an anonymous function";
  }
}

/** How many lines a node spans in `text`, its first and last included. */
export function lineSpan(node: Deno.lint.Node, text: string): { start: number; lines: number } {
  const start = lineOf(text, node.range[0]);
  const end = lineOf(text, Math.max(node.range[0], node.range[1] - 1));
  return { start, lines: end - start + 1 };
}

/** The plugin: `deno lint` names its rules `duet/<rule>`. */
const plugin: Deno.lint.Plugin = {
  name: "duet",
  rules: {
    "max-function-lines": {
      create(context) {
        if (!inFunctionLengthScope(context.filename)) return {};
        const text = context.sourceCode.text;
        const check = (node: Deno.lint.Node) => {
          const { lines } = lineSpan(node, text);
          if (lines <= MAX_FUNCTION_LINES) return;
          context.report({
            node,
            message: `${
              functionName(node, text)
            } is ${lines} lines long, more than ${MAX_FUNCTION_LINES}`,
            hint: "Split it into named steps: pure decisions apart from the I/O that runs them.",
          });
        };
        return {
          FunctionDeclaration: check,
          FunctionExpression: check,
          ArrowFunctionExpression: check,
        };
      },
    },
  },
};

export default plugin;
