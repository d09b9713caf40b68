/**
 * The chat client's engine, without any interface: the connection with its reconnection,
 * the key exchange (proofs checked, the key derived, a changed peer key held back until
 * the user accepts it), the outbox, history catch-up and decryption. The line mode and
 * the terminal interface both drive it and show what its events say.
 *
 * @module
 */
import {
  base64,
  decryptMessage,
  deriveSharedKey,
  encryptMessage,
  keyFingerprint,
  messageAad,
  offerFor,
  textProblem,
  verifyKeyOffer,
} from "./crypto.ts";
import {
  type ClientMessage,
  encodeFrame,
  FrameDecoder,
  MAX_HISTORY_LIMIT,
  parseServerMessage,
  PROTOCOL_VERSION,
  type ServerMessage,
  type StoredMessage,
} from "./protocol.ts";
import type { Conversation, KeyStore, OutboxEntry } from "./keystore.ts";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex } from "@noble/hashes/utils.js";

/** A message as the interface shows it. */
export interface MessageView {
  /** The server's id once stored. */
  id?: number;
  clientMsgId: string;
  sender: string;
  /** The plaintext, or null when it cannot be decrypted. */
  text: string | null;
  createdAt: Date;
  own: boolean;
  /** Own messages: where they are. */
  status: "waiting for key" | "sending" | "stored" | "failed";
  /** Why it cannot be read, or why sending failed. */
  problem?: string;
  /** Came from history (not live). */
  fromHistory: boolean;
}

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "stopped";

/** What happens, for the interface. */
export type ClientEvent =
  | { type: "state"; state: ConnectionState; detail?: string }
  | { type: "welcome"; party: 0 | 1; peer: string | null }
  | { type: "message"; message: MessageView }
  | { type: "key"; fingerprint: string; peer: string; changed: boolean; accepted: boolean }
  | { type: "notice"; text: string }
  | { type: "fatal"; text: string };

export interface ChatClientOptions {
  /** HOST:PORT */
  server: string;
  name: string;
  room: string;
  keyStore: KeyStore;
  onEvent: (event: ClientEvent) => void;
  backoff?: { baseMs: number; maxMs: number };
  heartbeatMs?: number;
  random?: () => number;
}

interface ActiveKey {
  peerPublicKey: string;
  key: CryptoKey;
}

export class ChatClient {
  readonly #options: ChatClientOptions;
  readonly #at: Conversation;
  readonly #secret: Uint8Array;
  #party: 0 | 1 | null;
  #peer: string | null = null;
  /** Keys to decrypt with, newest first; the first accepted one encrypts. */
  #keys: (ActiveKey & { accepted: boolean })[] = [];
  #writer?: WritableStreamDefaultWriter<Uint8Array>;
  #conn?: Deno.TcpConn;
  #stopped = false;
  #maxId = 0;
  readonly #seen = new Set<number>();
  readonly #inFlight = new Set<string>();
  #loop?: Promise<void>;

  constructor(options: ChatClientOptions) {
    this.#options = options;
    this.#at = { server: options.server, room: options.room, name: options.name };
    const identity = options.keyStore.identity(this.#at, () => secp256k1.utils.randomSecretKey());
    this.#secret = identity.secret;
    this.#party = identity.party;
  }

  /** Loads stored keys and the outbox, then connects (and reconnects) until stopped. */
  async start(): Promise<void> {
    for (const stored of this.#options.keyStore.peerKeys(this.#at).reverse()) {
      const key = await crypto.subtle.importKey(
        "raw",
        new Uint8Array(stored.sharedKey),
        "AES-GCM",
        true,
        [
          "encrypt",
          "decrypt",
        ],
      );
      this.#keys.push({ peerPublicKey: stored.peerPublicKey, key, accepted: stored.accepted });
    }
    for (const entry of this.#options.keyStore.outbox(this.#at)) {
      this.#showOwn(entry, entry.peerPublicKey ? "sending" : "waiting for key");
    }
    this.#loop = this.#run();
  }

  /** The key messages are sent under: the newest accepted one. */
  get #sendingKey(): ActiveKey | undefined {
    const newest = this.#keys[0];
    return newest?.accepted ? newest : undefined;
  }

  /** SHA-256 of the newest shared key, hex; null before the exchange completes. */
  async fingerprint(): Promise<string | null> {
    return this.#keys[0] ? await keyFingerprint(this.#keys[0].key) : null;
  }

  /** A changed peer key waits for this before anything is sent under it. */
  acceptKey(): boolean {
    const newest = this.#keys[0];
    if (!newest || newest.accepted) return false;
    newest.accepted = true;
    this.#options.keyStore.acceptPeerKey(this.#at, newest.peerPublicKey);
    this.#flushOutbox();
    return true;
  }

  #sending: Promise<void> = Promise.resolve();

  /**
   * Encrypts `text` into the outbox and sends it when it can. Sends are queued, so
   * messages keep the order they were typed in (encryption is asynchronous). Text over
   * MAX_TEXT_BYTES is refused at once with a RangeError and never reaches the outbox.
   */
  send(text: string): Promise<void> {
    const problem = textProblem(text);
    if (problem) return Promise.reject(new RangeError(`not sent: ${problem}`));
    const next = this.#sending.then(() => this.#send(text));
    this.#sending = next.catch(() => {});
    return next;
  }

  async #send(text: string): Promise<void> {
    const key = this.#sendingKey;
    const clientMsgId = crypto.randomUUID();
    if (!key) {
      // No key yet (or a changed one not accepted): kept in the local outbox unencrypted
      // (empty ciphertext) and encrypted when a key is there; never sent before.
      this.#options.keyStore.addToOutbox(this.#at, {
        clientMsgId,
        text,
        nonce: new Uint8Array(0),
        ciphertext: new Uint8Array(0),
        peerPublicKey: "",
      });
      this.#emit({ type: "message", message: this.#ownView(clientMsgId, text, "waiting for key") });
      return;
    }
    const entry = await this.#encrypt(clientMsgId, text, key);
    this.#options.keyStore.addToOutbox(this.#at, entry);
    this.#showOwn(entry, "sending");
    this.#transmit(entry);
  }

  /** Messages not yet acknowledged (in the outbox, some perhaps waiting for a key). */
  get unsent(): number {
    return this.#options.keyStore.outboxSize(this.#at);
  }

  /** Stops: closes the connection; the outbox stays for the next start. */
  async stop(): Promise<void> {
    this.#stopped = true;
    try {
      await this.#writer?.write(encodeFrame({ type: "bye" }));
    } catch { /* gone */ }
    try {
      this.#conn?.close();
    } catch { /* closed */ }
    await this.#loop;
  }

  async #encrypt(clientMsgId: string, text: string, key: ActiveKey): Promise<OutboxEntry> {
    const { nonce, ciphertext } = await encryptMessage(
      key.key,
      text,
      messageAad(this.#at.room, this.#at.name, clientMsgId),
    );
    return { clientMsgId, text, nonce, ciphertext, peerPublicKey: key.peerPublicKey };
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

  #transmit(entry: OutboxEntry): void {
    if (!this.#writer || this.#inFlight.has(entry.clientMsgId) || !entry.peerPublicKey) return;
    this.#inFlight.add(entry.clientMsgId);
    this.#sendFrame({
      type: "send",
      client_msg_id: entry.clientMsgId,
      nonce: base64.encode(entry.nonce),
      ciphertext: base64.encode(entry.ciphertext),
    });
  }

  /** Sends what the outbox holds (and encrypts what waited for a key). */
  async #flushOutbox(): Promise<void> {
    const key = this.#sendingKey;
    for (const entry of this.#options.keyStore.outbox(this.#at)) {
      if (entry.peerPublicKey) {
        this.#transmit(entry);
      } else if (key) {
        const sealed = await this.#encrypt(entry.clientMsgId, entry.text, key);
        this.#options.keyStore.removeFromOutbox(this.#at, entry.clientMsgId);
        this.#options.keyStore.addToOutbox(this.#at, sealed);
        this.#showOwn(sealed, "sending");
        this.#transmit(sealed);
      }
    }
  }

  async #run(): Promise<void> {
    const backoff = this.#options.backoff ?? { baseMs: 200, maxMs: 10_000 };
    const random = this.#options.random ?? Math.random;
    // A failure is told once per outage, not once per attempt: the title bar shows the
    // retrying, and a server down for a minute would otherwise fill the history.
    let told: string | undefined;
    for (let attempt = 0; !this.#stopped; attempt++) {
      this.#emit({ type: "state", state: attempt ? "reconnecting" : "connecting" });
      let welcomed = false;
      try {
        welcomed = await this.#session();
      } catch (error) {
        if (this.#stopped) break;
        const why = connectFailure(error);
        if (why !== told) this.#emit({ type: "notice", text: `connection failed: ${why}` });
        told = why;
      }
      if (this.#stopped) break;
      if (welcomed) {
        attempt = 0;
        told = undefined;
      }
      const delay = Math.floor(random() * Math.min(backoff.maxMs, backoff.baseMs * 2 ** attempt));
      this.#emit({
        type: "state",
        state: "reconnecting",
        detail: `in ${(delay / 1000).toFixed(1)} s`,
      });
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    this.#emit({ type: "state", state: "stopped" });
  }

  /** One connection, until it ends; true if it got as far as the welcome. */
  async #session(): Promise<boolean> {
    const colon = this.#at.server.lastIndexOf(":");
    const conn = await Deno.connect({
      hostname: this.#at.server.slice(0, colon).replace(/^\[|\]$/g, ""),
      port: Number(this.#at.server.slice(colon + 1)),
    });
    this.#conn = conn;
    this.#writer = conn.writable.getWriter();
    this.#inFlight.clear();
    const heartbeat = setInterval(
      () => this.#sendFrame({ type: "heartbeat" }),
      this.#options.heartbeatMs ?? 20_000,
    );
    let welcomed = false;
    try {
      this.#sendFrame({
        type: "hello",
        version: PROTOCOL_VERSION,
        name: this.#at.name,
        room: this.#at.room,
      });
      const frames = new FrameDecoder();
      for await (const chunk of conn.readable) {
        for (const payload of frames.push(chunk)) {
          const message = parseServerMessage(payload);
          if (message.type === "welcome") welcomed = true;
          await this.#handle(message);
        }
      }
    } finally {
      clearInterval(heartbeat);
      this.#writer = undefined;
      try {
        conn.close();
      } catch { /* closed */ }
    }
    return welcomed;
  }

  async #handle(message: ServerMessage): Promise<void> {
    switch (message.type) {
      case "welcome": {
        this.#party = message.party;
        this.#peer = message.peer;
        this.#options.keyStore.setParty(this.#at, message.party);
        this.#emit({ type: "state", state: "connected" });
        this.#emit({ type: "welcome", party: message.party, peer: message.peer });
        this.#sendFrame({
          type: "key_offer",
          ...offerFor(this.#secret, this.#at.room, message.party),
        });
        this.#sendFrame({ type: "history", after: this.#maxId, limit: MAX_HISTORY_LIMIT });
        await this.#flushOutbox();
        return;
      }
      case "peer_key":
        return await this.#peerKey(message);
      case "message":
        return await this.#received(message.message, false);
      case "history_page":
        for (const stored of message.messages) await this.#received(stored, true);
        if (message.has_more) {
          this.#sendFrame({ type: "history", after: this.#maxId, limit: MAX_HISTORY_LIMIT });
        }
        return;
      case "stored": {
        this.#inFlight.delete(message.client_msg_id);
        const entry = this.#options.keyStore.outboxEntry(this.#at, message.client_msg_id);
        this.#options.keyStore.removeFromOutbox(this.#at, message.client_msg_id);
        this.#seen.add(message.id);
        this.#maxId = Math.max(this.#maxId, message.id);
        if (entry) {
          this.#emit({
            type: "message",
            message: this.#ownView(entry.clientMsgId, entry.text, "stored", message.id),
          });
        }
        return;
      }
      case "error": {
        if (message.client_msg_id) {
          this.#inFlight.delete(message.client_msg_id);
          if (message.retryable) {
            const id = message.client_msg_id;
            setTimeout(() => {
              const entry = this.#options.keyStore.outboxEntry(this.#at, id);
              if (entry) this.#transmit(entry);
            }, 500);
          } else {
            const entry = this.#options.keyStore.outboxEntry(this.#at, message.client_msg_id);
            this.#options.keyStore.removeFromOutbox(this.#at, message.client_msg_id);
            if (entry) {
              this.#emit({
                type: "message",
                message: {
                  ...this.#ownView(entry.clientMsgId, entry.text, "failed"),
                  problem: message.message,
                },
              });
            }
          }
          return;
        }
        if (message.code === "room_full" || message.code === "unsupported_version") {
          this.#stopped = true;
          this.#emit({ type: "fatal", text: `${message.message} (${message.code})` });
          return;
        }
        this.#emit({ type: "notice", text: `server: ${message.message} (${message.code})` });
        return;
      }
      case "bye":
        this.#emit({ type: "notice", text: `server said bye: ${message.reason}` });
        return;
      case "heartbeat":
        return;
    }
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
    this.#peer = message.name;
    if (this.#keys.some((k) => k.peerPublicKey === message.public_key)) return;
    // Our public key straight from the secret: an offer would also make a proof.
    const mine = bytesToHex(secp256k1.getPublicKey(this.#secret, true));
    const keys: [string, string] = this.#party === 0
      ? [mine, message.public_key]
      : [message.public_key, mine];
    const key = await deriveSharedKey(this.#secret, this.#at.room, keys, this.#party);
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", key));
    // The first key is trusted on first use; a different one later is held back.
    const changed = this.#keys.length > 0;
    this.#options.keyStore.addPeerKey(this.#at, message.public_key, raw, !changed);
    this.#keys.unshift({ peerPublicKey: message.public_key, key, accepted: !changed });
    this.#emit({
      type: "key",
      fingerprint: await keyFingerprint(key),
      peer: message.name,
      changed,
      accepted: !changed,
    });
    if (!changed) await this.#flushOutbox();
  }

  async #received(stored: StoredMessage, fromHistory: boolean): Promise<void> {
    if (this.#seen.has(stored.id)) return;
    this.#seen.add(stored.id);
    this.#maxId = Math.max(this.#maxId, stored.id);
    const aad = messageAad(this.#at.room, stored.sender, stored.client_msg_id);
    let text: string | null = null;
    for (const candidate of this.#keys) {
      text = await decryptMessage(
        candidate.key,
        base64.decode(stored.nonce),
        base64.decode(stored.ciphertext),
        aad,
      );
      if (text !== null) break;
    }
    this.#emit({
      type: "message",
      message: {
        id: stored.id,
        clientMsgId: stored.client_msg_id,
        sender: stored.sender,
        text,
        createdAt: new Date(stored.created_at),
        own: stored.sender === this.#at.name,
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

  /** The peer's name once known. */
  get peer(): string | null {
    return this.#peer;
  }
}

/** Why a connection attempt failed, in words for the person at the keyboard. */
function connectFailure(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) {
    return "connection refused (is the server running?)";
  }
  return (error instanceof Error ? error.message : String(error)).replace(/ \(os error \d+\)$/, "");
}
