// deno-lint-ignore-file no-console -- an anchor program: printing is what it does
// Anchor: `deno run` of a module that only imports commander (Node compatibility's start
// included, which commander needs: node:process, node:fs, node:child_process).
import { Command } from "commander";
console.log(typeof Command);
