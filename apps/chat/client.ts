/**
 * The chat client's shell, without any interface: the TCP connection with its
 * reconnection, the key store, the crypto and the timers around the pure reducer of
 * client_core.ts, which decides what is sent when and what is shown in which order.
 * The line mode (line.ts) and the terminal interface (tui.ts) show what its events say.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { backoffMs, type BackoffPolicy } from "@duet/core/backoff";
import { checkDuration } from "@duet/core/duration";
import { MAX_TIMEOUT_MS } from "@duet/core/long-timeout";
import {
  base64,
  claimFor,
  decryptMessage,
  deriveSharedKey,
  encryptMessage,
  keyFingerprint,
  messageAad,
  textProblem,
  verifyKeyOffer,
  verifyRotation,
} from "./crypto.ts";
import {
  type ClientMessage,
  encodeFrame,
  FrameDecoder,
  HEARTBEAT_MS,
  MAX_HISTORY_LIMIT,
  parseServerMessage,
  PROTOCOL_VERSION,
  type ServerMessage,
  type StoredMessage,
} from "./protocol.ts";
import type { Conversation, KeyStore, OutboxEntry } from "./keystore.ts";
import {
  type ClientCommand,
  type ClientCoreEvent,
  type ClientState,
  connectFailureText,
  initialClientState,
  type OutboxItem,
  type Presence,
  reduceClient,
  retryText,
  type TimerKind,
} from "./client_core.ts";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  type CodeCommand,
  codeFrameFromWire,
  codeFrameToWire,
  type CodeRun,
  type CodeState,
  initialCodeState,
  mismatchText,
  onPeerCode,
  onPeerKey,
  startCodeRun,
} from "./code_core.ts";

export type { Presence } from "./client_core.ts";

/** A message as the interface shows it. */
export interface MessageView {
  /** The server's id once stored. */
  id?: number;
  /** The sender's id for the message (a UUID): the same on every retry and in history. */
  clientMsgId: string;
  /** Who wrote it, by name in the room. */
  sender: string;
  /** The plaintext, or null when it cannot be decrypted. */
  text: string | null;
  /** When the server stored it; own messages not yet stored: when this view was made. */
  createdAt: Date;
  /** Written by this client's name. */
  own: boolean;
  /** Own messages: where they are (`waiting for code`: sealed once a code confirms the key). */
  status: "waiting for key" | "waiting for code" | "sending" | "stored" | "failed";
  /** Why it cannot be read, or why sending failed. */
  problem?: string;
  /** Came from history (not live). */
  fromHistory: boolean;
}

/**
 * Where the connection is: the first attempt (`connecting`), welcomed by the server
 * (`connected`), waiting to try again or trying (`reconnecting`), given up for good after
 * {@link ChatClient.stop} or a fatal refusal (`stopped`).
 */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "stopped";

/** What happens, for the interface. */
export type ClientEvent =
  | { type: "state"; state: ConnectionState; detail?: string }
  | { type: "welcome"; party: 0 | 1; peer: string | null }
  | { type: "message"; message: MessageView }
  /**
   * A key agreed now (`changed`: it replaces another and waits for /accept-key; `reset`: the
   * peer's name was taken over without the old key, as after a lost key store;
   * `awaitingCode`: with a code, it waits for the code to confirm it).
   */
  | {
    type: "key";
    fingerprint: string;
    peer: string;
    changed: boolean;
    accepted: boolean;
    reset?: boolean;
    awaitingCode?: boolean;
  }
  /**
   * The key store already held a key for this conversation (a restarted client): `pending`,
   * not trusted yet; `verified`, a code confirmed it; `codeFailed`, a code run failed against
   * it; `awaitingCode`, this run's code is to confirm it.
   */
  | {
    type: "restored_key";
    fingerprint: string;
    pending: boolean;
    verified: boolean;
    codeFailed: boolean;
    awaitingCode?: boolean;
  }
  /**
   * Meeting by a code (ChatClientOptions.code): `waiting` for the peer's client to confirm
   * it; `verified`: the peer holds the same code and the keys are the ones both clients
   * hold, so nobody is in the middle (`earlier`: confirmed by an earlier run, so the code
   * given now was not needed); `failed`: the run failed (a `fatal` event says why).
   */
  | {
    type: "code";
    state: "waiting" | "verified" | "failed";
    peer: string | null;
    fingerprint?: string;
    earlier?: boolean;
  }
  /**
   * The peer is back on a key the user trusts, after a change that was not accepted:
   * messages go out under it again.
   */
  | { type: "key_restored"; fingerprint: string; peer: string }
  /**
   * A message from `sender` that only a key the user has not accepted (`fingerprint`)
   * decrypts: held back, never shown as the peer's, until that key is accepted.
   */
  | { type: "held"; id: number; sender: string; fingerprint: string; awaitingCode?: boolean }
  /**
   * The server says whether the peer is connected to the room (protocol version 4): on each
   * connection once the key is proved (`here`, `away`), and at each change (`came`, `left`).
   * Unknown again while this client is not connected (`state` events say so).
   */
  | { type: "presence"; peer: string; presence: Presence }
  | { type: "notice"; text: string }
  /** Stopped for good: why, and what to do (a sentence without a final period). */
  | { type: "fatal"; text: string };

/** How a {@link ChatClient} waits between reconnection attempts by default. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 200, maxMs: 10_000, jitter: "full" };

/** What a {@link ChatClient} needs. */
export interface ChatClientOptions {
  /** HOST:PORT as typed (`[::1]:7070` for IPv6); the conversation is keyed by the service it reaches. */
  server: string;
  /** This party's name in the room (protocol.ts, NAME: 1 to 32 of `A-Za-z0-9._-`). */
  name: string;
  /** The room's id (protocol.ts, ROOM: 1 to 64 of `A-Za-z0-9._~-`). */
  room: string;
  /** Where the secret key, the peer keys and the outbox are kept; the caller closes it. */
  keyStore: KeyStore;
  /** Told everything the interface shows, synchronously, in order. */
  onEvent: (event: ClientEvent) => void;
  /**
   * Reconnection: the n-th attempt in a row waits as `@duet/core`'s backoff says for retry
   * n (with "full" jitter: a random time below min(maxMs, initialMs × 2^(n−1)) ms). Default
   * {@link DEFAULT_BACKOFF}: 200 ms doubling up to 10,000 ms, full jitter.
   */
  backoff?: BackoffPolicy;
  /** A heartbeat frame is sent this often while connected (ms; default 20,000). */
  heartbeatMs?: number;
  /** Random numbers in [0, 1) for the backoff and its jitter (default Math.random; tests fix it). */
  random?: () => number;
  /**
   * Take the name over with this client's key although the room binds it to another (a
   * lost key store): the peer is told, and trusts the key only once its user accepts it.
   * Sent with this run's first key offer only.
   */
  resetKey?: boolean;
  /**
   * A code both people typed (packages/pake, parseCode: any case and separators): the
   * client runs CPace over it with the peer's client through the server, and trusts the
   * peer's key only once the code confirms it (code_core.ts). Until then nothing is sent,
   * and what the peer sends is held back; a code that does not match stops the client
   * (`fatal`). A key a code confirmed before is trusted without a new run.
   */
  code?: string;
}

/** What {@link ChatClient.acceptKey} did. */
export type AcceptOutcome =
  | { accepted: true; fingerprint: string; peer: string | null; released: number }
  | { accepted: false; problem: string };

interface ActiveKey {
  peerPublicKey: string;
  key: CryptoKey;
}

/**
 * One party of a two-party room: connects (and reconnects) to the server, agrees the key
 * with the peer, encrypts what is sent and decrypts what comes, keeps unsent messages in
 * the key store's outbox until the server has stored them, and tells the interface all of
 * it through `onEvent` ({@link ClientEvent}).
 *
 * @example
 * ```ts ignore
 * import { ChatClient, KeyStore } from "@duet/chat";
 *
 * const keyStore = await KeyStore.open("/tmp/alice-keys.sqlite");
 * const client = new ChatClient({
 *   server: "127.0.0.1:7070",
 *   name: "alice",
 *   room: "tea",
 *   keyStore,
 *   onEvent: (event) => {
 *     if (event.type === "message") console.log(`${event.message.sender}: ${event.message.text}`);
 *   },
 * });
 * await client.start();
 * await client.send("hello"); // in the outbox now; sent once the key is agreed
 * await client.stop(); // what is unsent stays for the next start
 * keyStore.close();
 * ```
 */
export class ChatClient {
  readonly #options: ChatClientOptions;
  #at: Conversation;
  #secret!: Uint8Array;
  #party: 0 | 1 | null = null;
  #peer: string | null = null;
  /** Keys to decrypt with, newest first; the first accepted one encrypts. */
  #keys: (ActiveKey & { accepted: boolean; verified: boolean; codeFailed: boolean })[] = [];
  /** The code run of this process (ChatClientOptions.code), once started. */
  #codeRun: CodeRun | undefined;
  #codeState: CodeState | undefined;
  /** A `peer_code` came though this client has no code: said once. */
  #toldPeerCode = false;
  /** The service the last welcome named (a code run's session id binds it). */
  #service: string | undefined;
  #writer?: WritableStreamDefaultWriter<Uint8Array>;
  #conn?: Deno.TcpConn;
  #stopped = false;
  /** Why the client stopped for good, if it did (ClientEvent `fatal`). */
  #fatal: string | undefined;
  #core: ClientState = initialClientState();
  /** Events and user actions, one at a time: commands run in the order decided. */
  #work: Promise<void> = Promise.resolve();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #loop?: Promise<void>;
  #wake?: () => void;
  /** The current (or last) connection got as far as the welcome. */
  #welcomed = false;
  /** The connection failure told in this outage, if any: the welcome says it is over. */
  #told: string | undefined;
  /** This connection's challenge (the welcome's): the key offer proves possession over it. */
  #challenge: string | undefined;
  #resetPending: boolean;
  /** Messages only an unaccepted key decrypts, by that key's public key, in arrival order. */
  readonly #held = new Map<string, { stored: StoredMessage; fromHistory: boolean }[]>();

  /**
   * A client for `options`; nothing is connected before {@link ChatClient.start}. Reads
   * (or makes) this conversation's secret key in the key store.
   *
   * @throws {RangeError} naming the option when `heartbeatMs` or a `backoff` bound is not
   *   in (0, 2^31 − 1] ms: timers fire almost at once past that.
   */
  constructor(options: ChatClientOptions) {
    const durations = {
      heartbeatMs: options.heartbeatMs,
      "backoff.initialMs": options.backoff?.initialMs,
      "backoff.maxMs": options.backoff?.maxMs,
    };
    for (const [name, ms] of Object.entries(durations)) {
      if (ms !== undefined) checkDuration(name, ms, { zero: false, max: MAX_TIMEOUT_MS });
    }
    this.#options = options;
    this.#resetPending = options.resetKey ?? false;
    this.#at = {
      service: options.keyStore.serviceKey(options.server),
      room: options.room,
      name: options.name,
    };
    this.#loadIdentity();
  }

  #loadIdentity(): void {
    const identity = this.#options.keyStore.identity(
      this.#at,
      () => secp256k1.utils.randomSecretKey(),
    );
    this.#secret = identity.secret;
    this.#party = identity.party;
  }

  async #loadKeys(): Promise<void> {
    this.#keys = [];
    for (const stored of this.#options.keyStore.peerKeys(this.#at).reverse()) {
      const key = await crypto.subtle.importKey(
        "raw",
        new Uint8Array(stored.sharedKey),
        "AES-GCM",
        true,
        ["encrypt", "decrypt"],
      );
      this.#keys.push({
        peerPublicKey: stored.peerPublicKey,
        key,
        accepted: stored.accepted,
        verified: stored.verified,
        codeFailed: stored.codeFailed,
      });
    }
    // The interface learns the key it has, as it would learn one agreed now.
    const newest = this.#keys[0];
    if (newest) {
      this.#emit({
        type: "restored_key",
        fingerprint: await keyFingerprint(newest.key),
        pending: !newest.accepted,
        verified: newest.verified,
        codeFailed: newest.codeFailed,
        ...(this.#options.code !== undefined && !newest.verified ? { awaitingCode: true } : {}),
      });
    }
  }

  /**
   * What the reducer knows of an entry: ready once sealed under a key trusted now (a key a
   * code run failed against is not), and with a code, only under a key the code confirmed
   * (nothing goes out before).
   */
  #item(entry: OutboxEntry): OutboxItem {
    const under = this.#keys.find((k) => k.peerPublicKey === entry.peerPublicKey);
    const trusted = under !== undefined && under.accepted && !under.codeFailed &&
      (this.#options.code === undefined || under.verified);
    return { clientMsgId: entry.clientMsgId, seq: entry.seq, ready: trusted };
  }

  /** Loads stored keys and the outbox, then connects (and reconnects) until stopped. */
  async start(): Promise<void> {
    await this.#loadKeys();
    const outbox = this.#options.keyStore.outbox(this.#at);
    for (const entry of outbox) {
      this.#showOwn(entry, entry.peerPublicKey ? "sending" : this.#waitingFor);
    }
    this.#core = initialClientState(outbox.map((entry) => this.#item(entry)));
    this.#loop = this.#run();
  }

  /** What an own message without a key to go under waits for. */
  get #waitingFor(): "waiting for key" | "waiting for code" {
    return this.#options.code === undefined ? "waiting for key" : "waiting for code";
  }

  /** The key messages are sent under: the newest accepted one (with a code: confirmed by it). */
  get #sendingKey(): ActiveKey | undefined {
    const newest = this.#keys[0];
    if (this.#options.code !== undefined) return newest?.verified ? newest : undefined;
    return newest?.accepted ? newest : undefined;
  }

  /** Whether a code confirmed the newest peer key (ChatClientOptions.code), now or before. */
  get verified(): boolean {
    return this.#keys[0]?.verified ?? false;
  }

  /** SHA-256 of the newest shared key, hex; null before the exchange completes. */
  async fingerprint(): Promise<string | null> {
    return this.#keys[0] ? await keyFingerprint(this.#keys[0].key) : null;
  }

  /**
   * Accepts a peer key that is waiting: the one whose fingerprint starts with `prefix` (hex,
   * at least 8 digits, spaces ignored), or without a prefix the peer's current key. Messages
   * held back under it are shown, and messages wait for it no longer when it is the current
   * one.
   */
  async acceptKey(prefix?: string): Promise<AcceptOutcome> {
    const waiting = [];
    for (const k of this.#keys) {
      if (!k.accepted) waiting.push({ k, fingerprint: await keyFingerprint(k.key) });
    }
    if (!waiting.length) return { accepted: false, problem: "no key is waiting to be accepted" };
    let chosen;
    if (prefix === undefined) {
      chosen = waiting.find((w) => w.k === this.#keys[0]);
      if (chosen?.k.codeFailed) {
        return {
          accepted: false,
          problem: "a code run failed against this key (another code, or someone in the " +
            "middle): start again with --code and the right code, or compare its fingerprint " +
            `with your peer and name it: /accept-key ${chosen.fingerprint.slice(0, 8)}`,
        };
      }
      if (!chosen) {
        return {
          accepted: false,
          problem: "the peer's current key is accepted already; to accept an older one, name " +
            `it: /accept-key ${waiting.map((w) => w.fingerprint.slice(0, 8)).join(" or ")}`,
        };
      }
    } else {
      const wanted = prefix.replaceAll(/\s/g, "").toLowerCase();
      if (!/^[0-9a-f]{8,64}$/.test(wanted)) {
        return {
          accepted: false,
          problem: "name the key by at least 8 hex digits of its fingerprint (/key shows it)",
        };
      }
      chosen = waiting.find((w) => w.fingerprint.startsWith(wanted));
      if (!chosen) {
        return {
          accepted: false,
          problem: `no waiting key has a fingerprint starting ${wanted} (waiting: ${
            waiting.map((w) => w.fingerprint.slice(0, 8)).join(", ")
          })`,
        };
      }
    }
    chosen.k.accepted = true;
    chosen.k.codeFailed = false;
    this.#options.keyStore.acceptPeerKey(this.#at, chosen.k.peerPublicKey);
    const held = this.#held.get(chosen.k.peerPublicKey) ?? [];
    this.#held.delete(chosen.k.peerPublicKey);
    await this.#enqueue(async () => {
      for (const { stored, fromHistory } of held) await this.#show(stored, fromHistory);
      await this.#seal();
    });
    return {
      accepted: true,
      fingerprint: chosen.fingerprint,
      peer: this.#peer,
      released: held.length,
    };
  }

  /**
   * Puts `text` in the outbox, encrypted when there is a key, and sends it when it can.
   * Messages keep the order they were typed in. Text over MAX_TEXT_BYTES, or any text once
   * the client has stopped for good ({@link ChatClient.fatal}), is refused at once with a
   * RangeError and never reaches the outbox.
   */
  send(text: string): Promise<void> {
    const problem = textProblem(text);
    if (problem) return Promise.reject(new RangeError(`not sent: ${problem}`));
    if (this.#fatal !== undefined) {
      return Promise.reject(new RangeError("not sent: the client has stopped (said above why)"));
    }
    return this.#enqueue(async () => {
      const key = this.#sendingKey;
      const clientMsgId = crypto.randomUUID();
      // No key yet (or a changed one not accepted): kept unencrypted (an empty ciphertext)
      // in the local outbox and encrypted when a key is there; never sent before.
      const sealed = key
        ? await this.#encrypt(clientMsgId, text, key)
        : { nonce: new Uint8Array(0), ciphertext: new Uint8Array(0), peerPublicKey: "" };
      const entry = this.#options.keyStore.addToOutbox(this.#at, { clientMsgId, text, ...sealed });
      this.#showOwn(entry, key ? "sending" : this.#waitingFor);
      await this.#dispatchNow({ type: "queued", item: this.#item(entry) });
    });
  }

  /** Messages not yet acknowledged (in the outbox, some perhaps waiting for a key). */
  get unsent(): number {
    return this.#options.keyStore.outboxSize(this.#at);
  }

  /** Stops: closes the connection; the outbox stays for the next start. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#wake?.();
    try {
      await this.#writer?.write(encodeFrame({ type: "bye" }));
    } catch { /* gone */ }
    try {
      this.#conn?.close();
    } catch { /* closed */ }
    // Bounded: a connection attempt to a host that never answers may take its time.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([this.#loop, this.#work.catch(() => {})]),
      new Promise((resolve) => (timer = setTimeout(resolve, 2_000))),
    ]);
    clearTimeout(timer);
  }

  /** The peer's name once known. */
  get peer(): string | null {
    return this.#peer;
  }

  /** Why the client stopped for good (the `fatal` event's text), if it did. */
  get fatal(): string | undefined {
    return this.#fatal;
  }

  #enqueue(task: () => Promise<void> | void): Promise<void> {
    const next = this.#work.then(task);
    this.#work = next.catch((error) =>
      this.#emit({ type: "notice", text: `internal error: ${(error as Error).message}` })
    );
    return next;
  }

  /** Runs the reducer and its commands; callers hold the work queue. */
  async #dispatchNow(event: ClientCoreEvent): Promise<void> {
    const { state, commands } = reduceClient(this.#core, event);
    this.#core = state;
    for (const command of commands) await this.#execute(command);
  }

  #dispatch(event: ClientCoreEvent): Promise<void> {
    return this.#enqueue(() => this.#dispatchNow(event));
  }

  /** Carries out one command of the reducer, in the order it decided. */
  async #execute(command: ClientCommand): Promise<void> {
    switch (command.type) {
      case "send_hello":
      case "send_key_offer":
      case "send_history":
      case "transmit":
        return this.#sendCommand(command);
      case "stored":
      case "dropped":
      case "renumber":
      case "note_stored_seq":
        return this.#outboxCommand(command);
      case "show":
        return await this.#show(command.message, command.fromHistory);
      case "peer_key":
        return await this.#peerKey(command.message);
      case "peer_code":
        return await this.#peerCode(command.message);
      case "send_code":
        return this.#sendCode();
      case "presence":
        this.#peer = command.name;
        return this.#emit({ type: "presence", peer: command.name, presence: command.presence });
      case "notice":
        // About the connection: once per outage (the next attempt would say it again).
        if (command.outage !== undefined) {
          if (command.outage === this.#told) return;
          this.#told = command.outage;
        }
        return this.#emit({ type: "notice", text: command.text });
      case "fatal":
        return this.#stopForGood(command.text, command.discard ?? false);
      case "schedule":
        return this.#schedule(command.timer, command.ms);
    }
  }

  /** The commands that send a frame. */
  #sendCommand(
    command: Extract<
      ClientCommand,
      { type: "send_hello" | "send_key_offer" | "send_history" | "transmit" }
    >,
  ): void {
    switch (command.type) {
      case "send_hello":
        return this.#sendFrame({
          type: "hello",
          version: PROTOCOL_VERSION,
          name: this.#at.name,
          room: this.#at.room,
        });
      case "send_key_offer": {
        if (this.#party === null || this.#challenge === undefined) return;
        const reset = this.#resetPending;
        this.#resetPending = false;
        return this.#sendFrame({
          type: "key_offer",
          ...claimFor(this.#secret, {
            room: this.#at.room,
            name: this.#at.name,
            party: this.#party,
            challenge: this.#challenge,
          }, { reset }),
        });
      }
      case "send_history":
        return this.#sendFrame({ type: "history", after: command.after, limit: MAX_HISTORY_LIMIT });
      case "transmit": {
        const entry = this.#options.keyStore.outboxEntry(this.#at, command.clientMsgId);
        if (!entry) return;
        return this.#sendFrame({
          type: "send",
          client_msg_id: entry.clientMsgId,
          seq: command.seq,
          nonce: base64.encode(entry.nonce),
          ciphertext: base64.encode(entry.ciphertext),
        });
      }
    }
  }

  /** The commands that change the key store's outbox (and show what became of a message). */
  #outboxCommand(
    command: Extract<
      ClientCommand,
      { type: "stored" | "dropped" | "renumber" | "note_stored_seq" }
    >,
  ): void {
    const store = this.#options.keyStore;
    switch (command.type) {
      case "stored": {
        const entry = store.outboxEntry(this.#at, command.clientMsgId);
        store.removeFromOutbox(this.#at, command.clientMsgId);
        if (entry) {
          this.#emit({
            type: "message",
            message: this.#ownView(entry.clientMsgId, entry.text, "stored", command.id),
          });
        }
        return;
      }
      case "dropped": {
        const entry = store.outboxEntry(this.#at, command.clientMsgId);
        store.removeFromOutbox(this.#at, command.clientMsgId);
        if (entry) {
          this.#emit({
            type: "message",
            message: {
              ...this.#ownView(entry.clientMsgId, entry.text, "failed"),
              problem: command.problem,
            },
          });
        }
        return;
      }
      case "renumber":
        store.renumberOutbox(this.#at, command.firstSeq);
        return;
      case "note_stored_seq":
        store.noteStoredSeq(this.#at, command.seq);
        return;
    }
  }

  /**
   * Stops after a refusal no retry mends. `discard`: nothing in the outbox can ever go out
   * (the room is full), so each entry is dropped and shown as not sent.
   */
  #stopForGood(text: string, discard: boolean): void {
    // Once: a second refusal (a frame sent again before the first was answered) says nothing new.
    if (this.#fatal !== undefined) return;
    this.#stopped = true;
    this.#fatal = text;
    this.#emit({ type: "fatal", text });
    if (discard) {
      for (const entry of this.#options.keyStore.outbox(this.#at)) {
        this.#options.keyStore.removeFromOutbox(this.#at, entry.clientMsgId);
        this.#emit({
          type: "message",
          message: {
            ...this.#ownView(entry.clientMsgId, entry.text, "failed"),
            problem: "this room is full (said above)",
          },
        });
      }
    }
    try {
      this.#conn?.close();
    } catch { /* closed */ }
  }

  #schedule(timer: TimerKind, ms: number): void {
    // Jitter, so that clients of one server do not all come back in the same instant.
    const random = this.#options.random ?? Math.random;
    const handle = setTimeout(() => {
      this.#timers.delete(handle);
      if (!this.#stopped) void this.#dispatch({ type: "timer", timer });
    }, Math.round(ms * (0.5 + random() / 2)));
    this.#timers.add(handle);
  }

  async #encrypt(
    clientMsgId: string,
    text: string,
    key: ActiveKey,
  ): Promise<{ nonce: Uint8Array; ciphertext: Uint8Array; peerPublicKey: string }> {
    const { nonce, ciphertext } = await encryptMessage(
      key.key,
      text,
      messageAad(this.#at.room, this.#at.name, clientMsgId),
    );
    return { nonce, ciphertext, peerPublicKey: key.peerPublicKey };
  }

  /** Encrypts, in order, what waited for a key, and lets the reducer send it. */
  async #seal(): Promise<void> {
    const key = this.#sendingKey;
    if (!key) return;
    const sealed: string[] = [];
    for (const entry of this.#options.keyStore.outbox(this.#at)) {
      if (entry.peerPublicKey) continue;
      const fields = await this.#encrypt(entry.clientMsgId, entry.text, key);
      this.#options.keyStore.sealOutboxEntry(this.#at, entry.clientMsgId, fields);
      this.#showOwn(entry, "sending");
      sealed.push(entry.clientMsgId);
    }
    if (sealed.length) await this.#dispatchNow({ type: "sealed", clientMsgIds: sealed });
  }

  #ownView(
    clientMsgId: string,
    text: string,
    status: MessageView["status"],
    id?: number,
  ): MessageView {
    return {
      clientMsgId,
      sender: this.#at.name,
      text,
      createdAt: new Date(),
      own: true,
      status,
      fromHistory: false,
      ...(id === undefined ? {} : { id }),
    };
  }

  #showOwn(entry: OutboxEntry, status: MessageView["status"]) {
    this.#emit({ type: "message", message: this.#ownView(entry.clientMsgId, entry.text, status) });
  }

  #emit(event: ClientEvent) {
    this.#options.onEvent(event);
  }

  #sendFrame(message: ClientMessage): void {
    this.#writer?.write(encodeFrame(message)).catch(() => {});
  }

  async #run(): Promise<void> {
    const backoff = this.#options.backoff ?? DEFAULT_BACKOFF;
    const random = this.#options.random ?? Math.random;
    // A failure is told once per outage, not once per attempt: the title bar shows the
    // retrying, and a server down for a minute would otherwise fill the history.
    for (let attempt = 0; !this.#stopped; attempt++) {
      this.#emit({ type: "state", state: attempt ? "reconnecting" : "connecting" });
      this.#welcomed = false;
      let failure: { error: unknown } | undefined;
      try {
        await this.#session();
      } catch (error) {
        failure = { error };
      }
      if (this.#stopped) break;
      if (this.#welcomed) attempt = 0;
      this.#tellEnd(failure);
      const delay = Math.floor(backoffMs(backoff, attempt + 1, random()));
      this.#emit({
        type: "state",
        state: "reconnecting",
        detail: retryText(delay),
      });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.#emit({ type: "state", state: "stopped" });
  }

  /**
   * Tells how a connection ended, once per outage: one that was welcomed was lost (unless
   * the server said why, with its bye or an error); one that was not, failed (`failure`:
   * what it threw), said in our words (client_core.ts, connectFailureText), the runtime's
   * own logged at debug level.
   */
  #tellEnd(failure: { error: unknown } | undefined): void {
    if (failure) {
      log.debug("The connection to {server} failed: {error}", {
        server: this.#options.server,
        error: String(failure.error),
      });
    }
    if (this.#welcomed) {
      if (this.#told !== undefined) return;
      this.#told = "lost";
      this.#emit({
        type: "notice",
        text: "Lost the connection to the server; the client reconnects by itself.",
      });
      return;
    }
    if (!failure) return;
    const why = connectFailureText(failure.error, this.#options.server);
    if (why !== this.#told) this.#emit({ type: "notice", text: why });
    this.#told = why;
  }

  /** One connection, until it ends; {@link #welcomed} says whether it got as far as the welcome. */
  async #session(): Promise<void> {
    const colon = this.#options.server.lastIndexOf(":");
    const conn = await Deno.connect({
      hostname: this.#options.server.slice(0, colon).replace(/^\[|\]$/g, ""),
      port: Number(this.#options.server.slice(colon + 1)),
    });
    this.#conn = conn;
    if (this.#stopped) {
      conn.close();
      return;
    }
    this.#writer = conn.writable.getWriter();
    const heartbeat = setInterval(
      () => this.#sendFrame({ type: "heartbeat" }),
      this.#options.heartbeatMs ?? HEARTBEAT_MS,
    );
    try {
      await this.#dispatch({ type: "connected" });
      const frames = new FrameDecoder();
      for await (const chunk of conn.readable) {
        for (const payload of frames.push(chunk)) {
          const message = parseServerMessage(payload);
          if (message.type === "welcome") {
            this.#welcomed = true;
            await this.#enqueue(() => this.#welcome(message));
          } else {
            await this.#dispatch({ type: "frame", message });
          }
        }
      }
    } finally {
      clearInterval(heartbeat);
      this.#writer = undefined;
      try {
        conn.close();
      } catch { /* closed */ }
      await this.#dispatch({ type: "disconnected" }).catch(() => {});
    }
  }

  /**
   * The welcome names the service: the conversation is keyed by it from now on, whatever
   * address reached it (the key store moves what was kept under the address).
   */
  async #welcome(message: Extract<ServerMessage, { type: "welcome" }>): Promise<void> {
    const store = this.#options.keyStore;
    const bound = store.bind(this.#options.server, message.service, this.#at.room, this.#at.name);
    if (bound.service !== this.#at.service) {
      this.#at = bound;
      this.#loadIdentity();
      await this.#loadKeys();
    }
    this.#party = message.party;
    this.#peer = message.peer;
    this.#challenge = message.challenge;
    store.setParty(this.#at, message.party);
    this.#emit({ type: "state", state: "connected" });
    if (this.#told !== undefined) {
      this.#emit({ type: "notice", text: "Connected to the server again." });
      this.#told = undefined;
    }
    this.#emit({ type: "welcome", party: message.party, peer: message.peer });
    await this.#dispatchNow({
      type: "welcome",
      message,
      outbox: store.outbox(this.#at).map((entry) => this.#item(entry)),
    });
    this.#service = message.service;
    this.#startCode(message.service);
    await this.#seal();
  }

  /**
   * With a code, on each welcome: starts this process's run if the peer's key is not
   * confirmed by a code yet, and sends its `code` frame (behind the key offer: the server
   * handles it once the key is proved).
   */
  #startCode(service: string): void {
    const code = this.#options.code;
    if (code === undefined || this.#party === null) return;
    if (!this.#codeRun) {
      const newest = this.#keys[0];
      if (newest?.verified) {
        // Said once, not at each reconnection.
        if (this.#codeState?.outcome === "verified") return;
        void keyFingerprint(newest.key).then((fingerprint) =>
          this.#emit({
            type: "code",
            state: "verified",
            peer: this.#peer,
            fingerprint,
            earlier: true,
          })
        );
        this.#codeState = { outcome: "verified", frame: { message: new Uint8Array(0) }, taken: 0 };
        return;
      }
      this.#codeRun = startCodeRun({
        code,
        service,
        room: this.#at.room,
        party: this.#party,
        publicKey: bytesToHex(secp256k1.getPublicKey(this.#secret, true)),
      });
      // The peer messages answered count across the runs of this process (a new run for a
      // changed key included): each is a guess for whoever sent it (code_core.ts).
      this.#codeState = { ...initialCodeState(this.#codeRun), taken: this.#codeState?.taken ?? 0 };
      this.#emit({ type: "code", state: "waiting", peer: this.#peer });
    }
    this.#sendCode();
  }

  /** Sends this run's current `code` frame, while it is pending. */
  #sendCode(): void {
    const state = this.#codeState;
    if (!this.#codeRun || state?.outcome !== "pending") return;
    this.#sendFrame({ type: "code", ...codeFrameToWire(state.frame) });
  }

  /** The peer's `code` frame: taken by the run; without a code, said once. */
  async #peerCode(message: Extract<ServerMessage, { type: "peer_code" }>): Promise<void> {
    if (this.#party === null || message.party === this.#party) return;
    if (this.#options.code === undefined) {
      // A key a code confirmed before needs no new run (the peer's stored message is old).
      if (this.#toldPeerCode || this.#keys[0]?.verified) return;
      this.#toldPeerCode = true;
      return this.#emit({
        type: "notice",
        text: `${message.name} started with a code (--code): to confirm your keys by it, ` +
          "start again with --code and the same code.",
      });
    }
    if (!this.#codeRun || !this.#codeState) return;
    const step = onPeerCode(
      this.#codeState,
      this.#codeRun,
      codeFrameFromWire(message),
      this.#keys[0]?.peerPublicKey ?? null,
    );
    await this.#codeCommands(step.state, step.commands);
  }

  /** Carries out what the code run decided. */
  async #codeCommands(state: CodeState, commands: CodeCommand[]): Promise<void> {
    this.#codeState = state;
    for (const command of commands) {
      switch (command.type) {
        case "send":
          this.#sendFrame({ type: "code", ...codeFrameToWire(command.frame) });
          break;
        case "verified":
          await this.#codeVerified();
          break;
        case "mismatch": {
          // The key the run failed against is trusted by nothing short of a code or its name.
          const current = this.#keys[0];
          if (current) {
            current.accepted = false;
            current.codeFailed = true;
            this.#options.keyStore.failPeerKey(this.#at, current.peerPublicKey);
          }
          this.#emit({ type: "code", state: "failed", peer: this.#peer });
          this.#stopForGood(mismatchText(command.reason, this.#peer ?? "your peer"), false);
          break;
        }
      }
    }
  }

  /**
   * The code confirmed the peer's current key: trusted and marked so in the key store; what
   * it held back is shown, and what waited is sent under it.
   */
  async #codeVerified(): Promise<void> {
    const current = this.#keys[0];
    if (!current) return;
    current.accepted = true;
    current.verified = true;
    current.codeFailed = false;
    this.#options.keyStore.verifyPeerKey(this.#at, current.peerPublicKey);
    const fingerprint = await keyFingerprint(current.key);
    this.#emit({ type: "code", state: "verified", peer: this.#peer, fingerprint });
    const held = this.#held.get(current.peerPublicKey) ?? [];
    this.#held.delete(current.peerPublicKey);
    for (const { stored, fromHistory } of held) await this.#show(stored, fromHistory);
    // Entries sealed under this key before it was confirmed may go now, then the rest.
    const ready = this.#options.keyStore.outbox(this.#at)
      .filter((entry) => entry.peerPublicKey === current.peerPublicKey)
      .map((entry) => entry.clientMsgId);
    if (ready.length) await this.#dispatchNow({ type: "sealed", clientMsgIds: ready });
    await this.#seal();
  }

  async #peerKey(message: Extract<ServerMessage, { type: "peer_key" }>): Promise<void> {
    if (this.#party === null || message.party === this.#party) return;
    if (!verifyKeyOffer(this.#at.room, message.party, message)) {
      this.#emit({
        type: "notice",
        text: `ignored a key for ${message.name}: its proof does not verify`,
      });
      return;
    }
    // Our own key relayed as the peer's: a key exchange with ourselves, never the peer's.
    const mine = bytesToHex(secp256k1.getPublicKey(this.#secret, true));
    if (message.public_key === mine) {
      this.#emit({
        type: "notice",
        text: `ignored a key for ${message.name}: it is this client's own key, sent back`,
      });
      return;
    }
    this.#peer = message.name;
    const known = this.#keys.findIndex((k) => k.peerPublicKey === message.public_key);
    if (known >= 0) {
      if (known === 0) return await this.#codeKey(message.public_key);
      // The peer is back on a key seen before: it is the current one again (trusted or not).
      const [back] = this.#keys.splice(known, 1);
      this.#keys.unshift(back!);
      this.#options.keyStore.touchPeerKey(this.#at, back!.peerPublicKey);
      const fingerprint = await keyFingerprint(back!.key);
      if (back!.accepted) {
        this.#emit({ type: "key_restored", fingerprint, peer: message.name });
        await this.#seal();
        await this.#codeKey(message.public_key);
      } else {
        this.#emit({
          type: "key",
          fingerprint,
          peer: message.name,
          changed: true,
          accepted: false,
        });
      }
      return;
    }
    const keys: [string, string] = this.#party === 0
      ? [mine, message.public_key]
      : [message.public_key, mine];
    const key = await deriveSharedKey(this.#secret, this.#at.room, keys, this.#party);
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", key));
    // The first key is trusted on first use; a later one only when the key we trust now
    // signed the change (checked here, not taken from the server); else it waits for the
    // user's /accept-key.
    // With a code, no key is trusted before the code confirms it.
    const changed = this.#keys.length > 0;
    const current = this.#keys[0];
    const signedByTrusted = changed && current?.accepted === true &&
      message.rotation?.public_key === current.peerPublicKey &&
      verifyRotation(this.#at.room, message.party, message.public_key, message.rotation);
    const byCode = this.#options.code !== undefined;
    const accepted = !byCode && (!changed || signedByTrusted);
    this.#options.keyStore.addPeerKey(this.#at, message.public_key, raw, accepted);
    this.#keys.unshift({
      peerPublicKey: message.public_key,
      key,
      accepted,
      verified: false,
      codeFailed: false,
    });
    this.#emit({
      type: "key",
      fingerprint: await keyFingerprint(key),
      peer: message.name,
      changed: changed && !signedByTrusted,
      accepted,
      ...(changed && !signedByTrusted && message.reset ? { reset: true } : {}),
      ...(byCode ? { awaitingCode: true } : {}),
    });
    if (accepted) await this.#seal();
    await this.#codeKey(message.public_key);
  }

  /**
   * The peer's current key, for the code run: a confirmation may have waited for it. A key a
   * code confirmed before made this process start no run; a new one needs it now.
   */
  async #codeKey(peerPublicKey: string): Promise<void> {
    const current = this.#keys[0];
    if (
      this.#options.code !== undefined && this.#service !== undefined && current &&
      !current.verified && this.#codeState?.outcome !== "pending" &&
      typeof this.#codeState?.outcome !== "object"
    ) {
      // No run, or one that confirmed the key before this one: a new run for the new key.
      this.#codeRun = undefined;
      this.#startCode(this.#service);
    }
    if (!this.#codeRun || !this.#codeState) return;
    const step = onPeerKey(this.#codeState, this.#codeRun, peerPublicKey);
    await this.#codeCommands(step.state, step.commands);
  }

  async #show(stored: StoredMessage, fromHistory: boolean): Promise<void> {
    const aad = messageAad(this.#at.room, stored.sender, stored.client_msg_id);
    const own = stored.sender === this.#at.name;
    let text: string | null = null;
    // Trusted keys first. A message only an unaccepted key opens is held back: whoever
    // holds that key wrote it, and that may not be the peer.
    for (const candidate of this.#keys.filter((k) => k.accepted)) {
      text = await decryptMessage(
        candidate.key,
        base64.decode(stored.nonce),
        base64.decode(stored.ciphertext),
        aad,
      );
      if (text !== null) break;
    }
    if (text === null && !own) {
      for (const candidate of this.#keys.filter((k) => !k.accepted)) {
        const opened = await decryptMessage(
          candidate.key,
          base64.decode(stored.nonce),
          base64.decode(stored.ciphertext),
          aad,
        );
        if (opened === null) continue;
        const held = this.#held.get(candidate.peerPublicKey) ?? [];
        if (held.some((h) => h.stored.id === stored.id)) return;
        // Bounded: a flood under a key nobody accepts is counted, not kept.
        if (held.length < MAX_HELD) held.push({ stored, fromHistory });
        this.#held.set(candidate.peerPublicKey, held);
        this.#emit({
          type: "held",
          id: stored.id,
          sender: stored.sender,
          fingerprint: await keyFingerprint(candidate.key),
          ...(this.#codeState?.outcome === "pending" ? { awaitingCode: true } : {}),
        });
        return;
      }
    }
    this.#emit({
      type: "message",
      message: {
        id: stored.id,
        clientMsgId: stored.client_msg_id,
        sender: stored.sender,
        text,
        createdAt: new Date(stored.created_at),
        own,
        status: "stored",
        fromHistory,
        ...(text === null
          ? {
            problem: this.#keys.length
              ? "cannot decrypt: tampered with, or under a key this client does not have"
              : "cannot decrypt yet: no key",
          }
          : {}),
      },
    });
  }
}

/** Messages held back per unaccepted key; more are announced but not kept. */
const MAX_HELD = 1_000;

const log = getLogger(["duet", "chat"]);
