// The session layer against headless Chromium 156: streams of both kinds in both
// directions ending with FIN, datagrams, close codes and reasons both ways, pinned
// certificate hashes, rejection, abort and cancel. And 10,000 sequential streams in one
// session (Deno's own wrapper fails at #100; this layer failed at 500-800 until it held its
// control stream, see README). The cases are in `_browser_cases.ts`, shared with
// `firefox_test.ts`.
import { findChromium, testWith } from "@duet/testkit";
import { interopCases, withChromium } from "./_browser_cases.ts";

const chromium = await findChromium();
const cases = interopCases("Chromium", withChromium);

testWith(chromium, cases.streamsAndDatagrams);
testWith(chromium, cases.browserCloses);
testWith(chromium, cases.serverOpensAndCloses);
testWith(chromium, cases.sequentialStreams);
testWith(chromium, cases.pinnedHashes);
testWith(chromium, cases.rejected);
testWith(chromium, cases.abort);
testWith(chromium, cases.cancel);
testWith(chromium, cases.dialectProtocolAndReasons);
