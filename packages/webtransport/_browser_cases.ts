/**
 * The browser interop cases, shared by every browser's tests (`server_test.ts` and
 * `chromium_test.ts` for Chromium through playwright-core, `firefox_test.ts` for Firefox
 * through puppeteer-core): the page scripts, the servers they talk to, and the assertions.
 * A browser's test file supplies a {@link WithPage} and registers the cases it returns.
 *
 * Page scripts are sent to the browser as source text (both drivers call the function's
 * `toString()`), so each one is self-contained: it uses its one argument and the page's
 * globals, nothing from this module.
 *
 * @module
 */
import assert from "node:assert/strict";
import { withChromiumPage, withFirefoxPage } from "@duet/testkit";
import {
  chooseProtocol,
  type CloseInfo,
  decodeFieldSection,
  decodeSettings,
  type Dialect,
  encodeFieldSection,
  encodeFrame,
  encodeSettings,
  encodeVarint,
  type Field,
  FrameReader,
  FrameType,
  generateCertificate,
  readVarint,
  serveWebTransport,
  Setting,
  StreamType,
  type WebTransportSession,
} from "./mod.ts";
import { acceptEchoSessions } from "./testdata/echo.ts";

/** Runs a page script in the browser with one JSON-serializable argument. */
export type Evaluate = <A, R>(script: (arg: A) => Promise<R>, arg: A) => Promise<R>;

/** Opens a page on a fresh http://127.0.0.1 origin, runs `fn`, closes the browser. */
export type WithPage = (fn: (evaluate: Evaluate, origin: string) => Promise<void>) => Promise<void>;

/** Chromium pages, through playwright-core. */
export function withChromium(
  fn: (evaluate: Evaluate, origin: string) => Promise<void>,
): Promise<void> {
  return withChromiumPage((page, origin) =>
    fn(
      // playwright types the argument as it arrives in the page (Unboxed<A>), which a
      // generic A cannot be checked against; the scripts take plain JSON.
      <A, R>(script: (arg: A) => Promise<R>, arg: A) =>
        page.evaluate(script as (arg: unknown) => Promise<R>, arg),
      origin,
    )
  );
}

/** Firefox pages, through puppeteer-core over WebDriver BiDi. */
export function withFirefox(
  fn: (evaluate: Evaluate, origin: string) => Promise<void>,
): Promise<void> {
  return withFirefoxPage((page, origin) =>
    fn(
      // puppeteer, likewise, types it as it arrives (FlattenHandle<A>).
      <A, R>(script: (arg: A) => Promise<R>, arg: A) =>
        page.evaluate(script as (arg: unknown) => Promise<R>, arg) as Promise<R>,
      origin,
    )
  );
}

/** Where a page script connects: our server's port and its certificate's SHA-256. */
interface Target {
  port: number;
  hash: number[];
}

const bytes = (s: string) => new TextEncoder().encode(s);

/** Test options: QUIC connections wind down after a test's assertions. */
const options = { sanitizeOps: false, sanitizeResources: false };

/** Runs `fn` with an echo server (see `testdata/echo.ts`) and a browser page. */
async function withEchoServer(
  withPage: WithPage,
  fn: (
    evaluate: Evaluate,
    target: Target,
    sessions: WebTransportSession[],
  ) => Promise<void>,
): Promise<void> {
  const certificate = await generateCertificate();
  const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
  const sessions = acceptEchoSessions(server);
  try {
    await withPage((evaluate) =>
      fn(evaluate, { port: server.addr.port, hash: [...certificate.sha256] }, sessions)
    );
  } finally {
    server.close();
  }
}

/**
 * Runs `fn` with a server that accepts any session and watches its first bidirectional
 * stream: for "abort", how the stream's readable ends after the first chunk ("reset",
 * "clean end" or "data"); for "cancel", whether writing 100 MB on it fails ("stopped") or
 * not ("never stopped"). `seen()` resolves with that, or with "nothing within 10 s" of the
 * call (a write blocked on flow control never fails on its own).
 */
async function withAbortServer(
  withPage: WithPage,
  kind: "abort" | "cancel",
  fn: (evaluate: Evaluate, target: Target, seen: () => Promise<string>) => Promise<void>,
): Promise<void> {
  const certificate = await generateCertificate();
  const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
  const seen = Promise.withResolvers<string>();
  (async () => {
    for await (const request of server.requests) {
      const session = await request.accept();
      for await (const stream of session.incomingBidirectionalStreams) {
        const reader = stream.readable.getReader();
        assert.equal(new TextDecoder().decode((await reader.read()).value), kind);
        if (kind === "abort") {
          seen.resolve(
            await reader.read().then((r) => r.done ? "clean end" : "data", () => "reset"),
          );
          continue;
        }
        const writer = stream.writable.getWriter();
        try {
          for (let i = 0; i < 100_000; i++) await writer.write(new Uint8Array(1024));
          seen.resolve("never stopped");
        } catch {
          seen.resolve("stopped");
        }
      }
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = () =>
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve("nothing within 10 s"), 10_000);
    });
  try {
    await withPage((evaluate) =>
      fn(
        evaluate,
        { port: server.addr.port, hash: [...certificate.sha256] },
        () => Promise.race([seen.promise, deadline()]),
      )
    );
  } finally {
    clearTimeout(timer);
    server.close();
  }
}

/**
 * Runs `fn` with a server that answers the application protocol `duet-test.v1` when offered,
 * records each request's dialect and offered protocols, and on /long-close closes at once
 * with a reason of 2,000 bytes (1,000 two-byte characters).
 */
async function withNegotiatingServer(
  withPage: WithPage,
  fn: (
    evaluate: Evaluate,
    target: Target,
    seen: { dialect: Dialect; protocols: string[]; closed: Promise<CloseInfo> }[],
  ) => Promise<void>,
): Promise<void> {
  const certificate = await generateCertificate();
  const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
  const seen: { dialect: Dialect; protocols: string[]; closed: Promise<CloseInfo> }[] = [];
  (async () => {
    for await (const request of server.requests) {
      const protocol = chooseProtocol(request.protocols, ["duet-test.v1"]);
      const session = await request.accept(protocol ? { protocol } : {});
      seen.push({ dialect: request.dialect, protocols: request.protocols, closed: session.closed });
      if (request.url.pathname === "/long-close") {
        await session.close({ closeCode: 9, reason: "é".repeat(1000) });
      }
    }
  })();
  try {
    await withPage((evaluate) =>
      fn(evaluate, { port: server.addr.port, hash: [...certificate.sha256] }, seen)
    );
  } finally {
    server.close();
  }
}

// ---- page scripts ----

/**
 * Offers two application protocols and reports the one chosen; closes with a reason of
 * 2,000 bytes; then opens /long-close and reports the server's close as it arrives.
 */
async function negotiateAndCloseLong({ port, hash }: Target) {
  const serverCertificateHashes = [{ algorithm: "sha-256", value: new Uint8Array(hash) }];
  const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
    serverCertificateHashes,
    protocols: ["duet-test.v2", "duet-test.v1"],
  } as WebTransportOptions);
  await wt.ready;
  const protocol = (wt as unknown as { protocol?: string }).protocol ?? "(no protocol attribute)";
  wt.close({ closeCode: 3, reason: "x".repeat(2000) });
  await wt.closed;
  const other = new WebTransport(`https://127.0.0.1:${port}/long-close`, {
    serverCertificateHashes,
  } as WebTransportOptions);
  const closed = await other.closed.then(
    (info) => ({ closeCode: info.closeCode, reason: info.reason }),
    (error) => ({ closeCode: -1, reason: String(error) }),
  );
  return { protocol, closeCode: closed.closeCode, reason: closed.reason };
}

/** Bidi echo (FIN ends it), uni out and a uni reply back, a datagram out and back. */
async function echoStreamsAndDatagrams({ port, hash }: Target) {
  const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
  });
  await wt.ready;
  const read = async (r: ReadableStream<Uint8Array>) => {
    let s = "";
    for await (const c of r as unknown as AsyncIterable<Uint8Array>) {
      s += new TextDecoder().decode(c);
    }
    return s;
  };
  const bidi = await wt.createBidirectionalStream();
  const w = bidi.writable.getWriter();
  await w.write(new TextEncoder().encode("ping 1\n"));
  await w.close();
  const bidiReply = await read(bidi.readable);
  const uni = await wt.createUnidirectionalStream();
  const uw = uni.getWriter();
  await uw.write(new TextEncoder().encode("привет"));
  await uw.close();
  const incoming = wt.incomingUnidirectionalStreams.getReader();
  const uniReply = await read((await incoming.read()).value!);
  const dw = wt.datagrams.writable.getWriter();
  await dw.write(new TextEncoder().encode("dgram"));
  const datagram = new TextDecoder().decode(
    (await wt.datagrams.readable.getReader().read()).value,
  );
  wt.close();
  return { bidiReply, uniReply, datagram };
}

/** Opens a session and closes it with a code and a reason. */
async function closeWithCodeAndReason(
  { port, hash, closeCode, reason }: Target & { closeCode: number; reason: string },
) {
  const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
  });
  await wt.ready;
  wt.close({ closeCode, reason });
  return await wt.closed;
}

/** Reads the first stream the server opens, to its FIN, then waits for the server's close. */
async function readServerStreamAndClose({ port, hash }: Target) {
  const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
  });
  await wt.ready;
  const { value: stream } = await wt.incomingBidirectionalStreams.getReader().read();
  let got = "";
  for await (const c of stream!.readable as unknown as AsyncIterable<Uint8Array>) {
    got += new TextDecoder().decode(c);
  }
  const closed = await wt.closed;
  return { got, closeCode: closed.closeCode, reason: closed.reason };
}

/** `count` streams one after another in one session; each must echo. */
async function sequentialStreams({ port, hash, count }: Target & { count: number }) {
  const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
  });
  await wt.ready;
  let ok = 0;
  try {
    for (let i = 0; i < count; i++) {
      const s = await wt.createBidirectionalStream();
      const w = s.writable.getWriter();
      w.write(new TextEncoder().encode(`${i}`));
      // Not awaited: close() resolves when the FIN is acknowledged (~25 ms of delayed
      // ACK); the echo below already proves the FIN arrived.
      w.close();
      let reply = "";
      for await (const c of s.readable as unknown as AsyncIterable<Uint8Array>) {
        reply += new TextDecoder().decode(c);
      }
      if (reply === `echo: ${i}`) ok++;
    }
  } catch (error) {
    return `failed after ${ok}: ${error}`;
  }
  wt.close();
  return ok;
}

/** Connects to `path` pinning `hashes`; says whether the session became ready. */
async function tryConnect(
  { port, path, hashes }: { port: number; path: string; hashes: number[][] },
) {
  const wt = new WebTransport(`https://127.0.0.1:${port}${path}`, {
    serverCertificateHashes: hashes.map((h) => ({
      algorithm: "sha-256",
      value: new Uint8Array(h),
    })),
  });
  try {
    await wt.ready;
    wt.close();
    return "ready";
  } catch (error) {
    return `refused: ${(error as Error).name}`;
  }
}

/**
 * "abort": writes on a stream, then aborts its writable (RESET_STREAM). "cancel": writes on a
 * stream, reads the first of the server's replies, then cancels its readable (STOP_SENDING).
 */
async function abortOrCancel({ port, hash, kind }: Target & { kind: "abort" | "cancel" }) {
  const wt = new WebTransport(`https://127.0.0.1:${port}/abort`, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
  });
  await wt.ready;
  const stream = await wt.createBidirectionalStream();
  const w = stream.writable.getWriter();
  await w.write(new TextEncoder().encode(kind));
  if (kind === "abort") {
    await new Promise((r) => setTimeout(r, 50));
    await w.abort("changed my mind");
    return;
  }
  const r = stream.readable.getReader();
  await r.read();
  await r.cancel();
}

/** Opens a session to /ping and waits for it to be ready. */
export async function openSession({ port, hash }: Target): Promise<string> {
  const wt = new WebTransport(`https://127.0.0.1:${port}/ping`, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
  });
  try {
    await wt.ready;
    return "ready";
  } catch (error) {
    return `failed: ${error}`;
  }
}

// ---- the cases against serveWebTransport ----

/** The interop cases against `serveWebTransport`, by key, named for `browser`. */
export interface InteropCases {
  /** Bidi and uni streams both directions, FIN, datagrams both directions. */
  streamsAndDatagrams: Deno.TestDefinition;
  /** The browser's close code and reason reach the server. */
  browserCloses: Deno.TestDefinition;
  /** A server-opened bidi stream reaches the browser, then the server's close code and reason. */
  serverOpensAndCloses: Deno.TestDefinition;
  /** 10,000 sequential streams in one session. */
  sequentialStreams: Deno.TestDefinition;
  /** A certificate hash list pins: any listed hash is accepted; a wrong hash alone is refused. */
  pinnedHashes: Deno.TestDefinition;
  /** A request the server rejects fails the session. */
  rejected: Deno.TestDefinition;
  /** abort() on a browser's writable reaches the server as an error (RESET_STREAM). */
  abort: Deno.TestDefinition;
  /** cancel() on a browser's readable stops the server's writes (STOP_SENDING). */
  cancel: Deno.TestDefinition;
  /**
   * The dialect the browser speaks with a server announcing all four, the application
   * protocol it is answered, and close reasons over 1,024 bytes both ways.
   */
  dialectProtocolAndReasons: Deno.TestDefinition;
}

/** What each interop case is built from. */
interface CaseContext {
  browser: string;
  withPage: WithPage;
  protocols: boolean;
}

/** Each interop case, given the browser it runs against. */
const CASES: { [K in keyof InteropCases]: (context: CaseContext) => Deno.TestDefinition } = {
  streamsAndDatagrams: ({ browser, withPage }) => ({
    name: `server: ${browser} streams both kinds and datagrams echo; FIN ends each stream`,
    ...options,
    fn: () =>
      withEchoServer(withPage, async (evaluate, target) => {
        assert.deepEqual(await evaluate(echoStreamsAndDatagrams, target), {
          bidiReply: "echo: ping 1\n",
          uniReply: "uni echo: привет",
          datagram: "dgram",
        });
      }),
  }),

  browserCloses: ({ browser, withPage }) => ({
    name: `server: ${browser}'s close code and reason reach the server`,
    ...options,
    fn: () =>
      withEchoServer(withPage, async (evaluate, target, sessions) => {
        const local = await evaluate(closeWithCodeAndReason, {
          ...target,
          closeCode: 7,
          reason: "bye",
        });
        assert.deepEqual(local, { closeCode: 7, reason: "bye" });
        const closed: CloseInfo = await sessions[0]!.closed;
        assert.deepEqual(
          closed,
          { closeCode: 7, reason: "bye" },
          "the browser's close code and reason arrive",
        );
      }),
  }),

  dialectProtocolAndReasons: ({ browser, withPage, protocols }) => ({
    name: `server: ${browser} speaks draft02 beside the newer dialects, ${
      protocols ? "gets the protocol it offered" : "offers no protocol"
    }, and long close reasons arrive cut to 1,024 bytes both ways`,
    ...options,
    fn: () =>
      withNegotiatingServer(withPage, async (evaluate, target, seen) => {
        const page = await evaluate(negotiateAndCloseLong, target);
        assert.deepEqual(page, {
          protocol: protocols ? "duet-test.v1" : "(no protocol attribute)",
          closeCode: 9,
          reason: "é".repeat(512),
        });
        assert.equal(seen[0]!.dialect, "draft02");
        assert.deepEqual(seen[0]!.protocols, protocols ? ["duet-test.v2", "duet-test.v1"] : []);
        assert.deepEqual(await seen[0]!.closed, { closeCode: 3, reason: "x".repeat(1024) });
      }),
  }),

  serverOpensAndCloses: ({ browser, withPage }) => ({
    name: `server: a server-opened stream reaches ${browser}, and the server's close code ` +
      "and reason too",
    ...options,
    fn: () =>
      withEchoServer(withPage, async (evaluate, target, sessions) => {
        const opened = evaluate(readServerStreamAndClose, target);
        for (let i = 0; i < 500 && sessions.length === 0; i++) {
          await new Promise((r) => setTimeout(r, 10));
        }
        const session = sessions[0]!;
        const stream = await session.createBidirectionalStream();
        const writer = stream.writable.getWriter();
        await writer.write(bytes("hello from the server"));
        await writer.close();
        await new Promise((r) => setTimeout(r, 100));
        await session.close({ closeCode: 42, reason: "done" });
        assert.deepEqual(await opened, {
          got: "hello from the server",
          closeCode: 42,
          reason: "done",
        });
      }),
  }),

  sequentialStreams: ({ browser, withPage }) => ({
    name: `server: 10,000 sequential streams in one ${browser} session all complete`,
    ...options,
    fn: () =>
      withEchoServer(withPage, async (evaluate, target) => {
        assert.equal(await evaluate(sequentialStreams, { ...target, count: 10_000 }), 10_000);
      }),
  }),

  pinnedHashes: ({ browser, withPage }) => ({
    name: `server: ${browser} accepts the server's pinned hash among others and refuses a ` +
      "wrong hash",
    ...options,
    fn: () =>
      withEchoServer(withPage, async (evaluate, { port, hash }, sessions) => {
        const other = [...(await generateCertificate()).sha256];
        const wrong = await evaluate(tryConnect, { port, path: "/echo", hashes: [other] });
        assert.match(wrong, /^refused: /);
        assert.equal(sessions.length, 0, "no session request gets through the handshake");
        const pinned = await evaluate(tryConnect, {
          port,
          path: "/echo",
          hashes: [other, hash],
        });
        assert.equal(pinned, "ready");
        assert.equal(sessions.length, 1);
      }),
  }),

  rejected: ({ browser, withPage }) => ({
    name: `server: a rejected request fails ${browser}'s session with no data`,
    ...options,
    fn: () =>
      withEchoServer(withPage, async (evaluate, { port, hash }) => {
        const result = await evaluate(tryConnect, { port, path: "/nope", hashes: [hash] });
        assert.match(result, /^refused: /);
      }),
  }),

  abort: ({ browser, withPage }) => ({
    name: `server: ${browser}'s abort() (RESET_STREAM) reaches the server as an error, ` +
      "not as a clean end",
    ...options,
    fn: () =>
      withAbortServer(withPage, "abort", async (evaluate, target, seen) => {
        await evaluate(abortOrCancel, { ...target, kind: "abort" });
        assert.equal(await seen(), "reset");
      }),
  }),

  cancel: ({ browser, withPage }) => ({
    name: `server: ${browser}'s cancel() (STOP_SENDING) stops the server's writes`,
    ...options,
    fn: () =>
      withAbortServer(withPage, "cancel", async (evaluate, target, seen) => {
        await evaluate(abortOrCancel, { ...target, kind: "cancel" });
        assert.equal(await seen(), "stopped");
      }),
  }),
};

/** The interop cases for `browser`, whose pages `withPage` opens. */
export function interopCases(
  browser: string,
  withPage: WithPage,
  /**
   * Whether the browser implements the W3C `protocols` option and `protocol` attribute
   * (Chromium 156 does, Firefox 153 does not): the protocol case asserts either way.
   */
  { protocols = true }: { protocols?: boolean } = {},
): InteropCases {
  const context = { browser, withPage, protocols };
  return Object.fromEntries(
    Object.entries(CASES).map(([name, make]) => [name, make(context)]),
  ) as unknown as InteropCases;
}

// ---- the smallest server a browser accepts, built from the codecs ----

/** What a browser sent to {@link captureSession}'s server. */
export interface Seen {
  settings?: Map<number, number>;
  connect?: Field[];
  uniStreamTypes: number[];
}

/** Accepts one connection and one session; records what the browser sent. */
async function serveOneSession(conn: Deno.QuicConn, seen: Seen): Promise<void> {
  const control = (await conn.createUnidirectionalStream()).getWriter();
  await control.write(
    new Uint8Array([
      ...encodeVarint(StreamType.CONTROL),
      ...encodeFrame(
        FrameType.SETTINGS,
        encodeSettings(
          new Map([
            [Setting.QPACK_MAX_TABLE_CAPACITY, 0],
            [Setting.QPACK_BLOCKED_STREAMS, 0],
            [Setting.ENABLE_CONNECT_PROTOCOL, 1],
            [Setting.H3_DATAGRAM, 1],
            [Setting.ENABLE_WEBTRANSPORT, 1],
          ]),
        ),
      ),
    ]),
  );
  (async () => {
    for await (const stream of conn.incomingUnidirectionalStreams) {
      (async () => {
        const reader = new FrameReader();
        let type: number | undefined;
        for await (const chunk of stream) {
          if (type === undefined) {
            const header = readVarint(chunk)!;
            type = header.value;
            seen.uniStreamTypes.push(type);
            reader.push(chunk.subarray(header.length));
          } else {
            reader.push(chunk);
          }
          if (type !== StreamType.CONTROL) continue;
          for (let frame = reader.next(); frame; frame = reader.next()) {
            if (frame.type === FrameType.SETTINGS) seen.settings = decodeSettings(frame.payload);
          }
        }
      })().catch(() => {});
    }
  })().catch(() => {});
  for await (const stream of conn.incomingBidirectionalStreams) {
    const reader = new FrameReader();
    const source = stream.readable.getReader();
    let frame;
    while (!(frame = reader.next())) {
      const { value, done } = await source.read();
      if (done) return;
      reader.push(value);
    }
    assert.equal(frame.type, FrameType.HEADERS);
    seen.connect = decodeFieldSection(frame.payload);
    await stream.writable.getWriter().write(
      encodeFrame(
        FrameType.HEADERS,
        encodeFieldSection([[":status", "200"], ["sec-webtransport-http3-draft", "draft02"]]),
      ),
    );
    return;
  }
}

/**
 * A server made of Deno's raw QUIC API and this package's frames, SETTINGS and QPACK
 * (no session layer) takes one session from the browser, which pins a generated
 * certificate by its hash; resolves with the page's result and what the browser sent.
 */
export async function captureSession(
  withPage: WithPage,
): Promise<{ result: string; seen: Seen; origin: string }> {
  const certificate = await generateCertificate();
  const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
  const listener = endpoint.listen({
    cert: certificate.certPem,
    key: certificate.keyPem,
    alpnProtocols: ["h3"],
  });
  const seen: Seen = { uniStreamTypes: [] };
  const served = (async (): Promise<Deno.QuicConn | undefined> => {
    for await (const incoming of listener) {
      const conn = await incoming.accept();
      await serveOneSession(conn, seen);
      return conn;
    }
    return undefined;
  })();
  try {
    let outcome: { result: string; seen: Seen; origin: string } | undefined;
    await withPage(async (evaluate, origin) => {
      const result = await evaluate(openSession, {
        port: endpoint.addr.port,
        hash: [...certificate.sha256],
      });
      if (result === "ready") {
        const conn = await served;
        conn?.close({ closeCode: 0, reason: "" });
      }
      outcome = { result, seen, origin };
    });
    return outcome!;
  } finally {
    endpoint.close();
  }
}
