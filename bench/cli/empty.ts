// deno-lint-ignore-file no-console -- an anchor program: printing is what it does
// Anchor: `deno run` of a module that does nothing (the runtime's own start and exit).
console.log("");
