/**
 * The chat server: TCP, the protocol of protocol.ts, rooms of two, key offers checked and
 * relayed, ciphertext stored and pushed. Delivery goes through the store's channel
 * (LISTEN/NOTIFY) for every instance alike, this one included, so two servers on one
 * database deliver each other's messages; when the listener reconnects, each connected
 * client is sent what it may have missed.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  type ClientMessage,
  encodeFrame,
  errorMessage,
  FrameDecoder,
  MAX_CIPHERTEXT_BYTES,
  MAX_HISTORY_LIMIT,
  parseClientMessage,
  PROTOCOL_VERSION,
  ProtocolError,
  type ServerMessage,
  type StoredMessage,
} from "./protocol.ts";
import type { ChatStore, MessageRow, StoreEvent } from "./store.ts";
import { base64, verifyKeyOffer } from "./crypto.ts";

/** Server settings; all but the store have defaults in {@link DEFAULTS}. */
export interface ChatServerConfig {
  hostname: string;
  port: number;
  store: ChatStore;
  /** Sends allowed per second per connection (a token bucket of twice this). */
  messagesPerSecond: number;
  /** Connections one address may hold at once. */
  maxConnectionsPerAddress: number;
  /** A connection that sends nothing for this long is closed (clients send heartbeats). */
  idleTimeoutMs: number;
}

/** The defaults of `duet chat-server`. */
export const DEFAULTS: Omit<ChatServerConfig, "store"> = {
  hostname: "127.0.0.1",
  port: 7070,
  messagesPerSecond: 20,
  maxConnectionsPerAddress: 16,
  idleTimeoutMs: 60_000,
};

/** A started server. */
export interface RunningChatServer {
  addr: Deno.NetAddr;
  /** Connections open now. */
  readonly connections: number;
  /** Says bye to everyone, stops listening, closes the store. */
  shutdown(): Promise<void>;
}

const log = getLogger(["duet", "chat"]);

interface Client {
  send(message: ServerMessage): void;
  close(): void;
  name: string;
  room: string;
  party: 0 | 1;
  /**
   * Every message up to this id was delivered (or was there at welcome, for the client to
   * read from history). Only a catch-up moves it: pushes can come out of id order and
   * around gaps the listener missed.
   */
  floor: number;
  /** Ids pushed above the floor, so a catch-up does not send them again. */
  pushed: Set<number>;
}

/** Pushed ids remembered per client between catch-ups; older ones may be sent twice. */
const PUSHED_MEMORY = 10_000;

function remember(client: Client, id: number): void {
  client.pushed.add(id);
  if (client.pushed.size > PUSHED_MEMORY) {
    client.pushed.delete(Math.min(...client.pushed));
  }
}

function wire(row: MessageRow): StoredMessage {
  return {
    id: row.id,
    sender: row.sender,
    client_msg_id: row.clientMsgId,
    nonce: base64.encode(row.nonce),
    ciphertext: base64.encode(row.ciphertext),
    created_at: row.createdAt.toISOString(),
  };
}

/** Starts the server; resolves once it listens and its listener is subscribed. */
export async function startChatServer(
  overrides: Partial<ChatServerConfig> & { store: ChatStore },
): Promise<RunningChatServer> {
  const config: ChatServerConfig = { ...DEFAULTS, ...overrides };
  const { store } = config;
  await store.migrate();
  const rooms = new Map<string, Map<string, Client>>();
  const perAddress = new Map<string, number>();
  const open = new Set<Deno.TcpConn>();
  let stopping = false;

  const membersOf = (room: string) => [...(rooms.get(room)?.values() ?? [])];

  async function onEvent(event: StoreEvent): Promise<void> {
    const members = membersOf(event.room);
    if (!members.length) return;
    if (event.kind === "key") {
      const offers = await store.keyOffers(event.room);
      const offer = offers.find((o) => o.party === event.party);
      if (!offer) return;
      for (const client of members) {
        if (client.party !== event.party) client.send(peerKey(offer));
      }
      return;
    }
    const row = event.message ?? await store.message(event.id);
    if (!row) return;
    for (const client of members) {
      if (client.name === row.sender || client.pushed.has(row.id)) continue;
      client.send({ type: "message", message: wire(row) });
      remember(client, row.id);
    }
  }

  /** After the listener (re)connects: what was stored while nobody listened. */
  async function catchUp(): Promise<void> {
    for (const [room, members] of rooms) {
      for (const client of members.values()) {
        for (;;) {
          const page = await store.history(room, { after: client.floor, limit: MAX_HISTORY_LIMIT });
          for (const row of page.messages) {
            if (row.sender !== client.name && !client.pushed.has(row.id)) {
              client.send({ type: "message", message: wire(row) });
            }
            client.pushed.delete(row.id);
            client.floor = row.id;
          }
          if (!page.hasMore) break;
        }
      }
    }
  }

  let listened = 0;
  await store.listen(
    (event) =>
      onEvent(event).catch((error) =>
        log.warn("Delivery failed: {error}", { error: String(error) })
      ),
    () => {
      if (listened++ > 0) {
        log.info("The database listener is back; catching clients up");
        catchUp().catch((error) => log.warn("Catch-up failed: {error}", { error: String(error) }));
      }
    },
  );

  const listener = Deno.listen({ hostname: config.hostname, port: config.port });
  const serving = (async () => {
    for await (const conn of listener) {
      handle(conn).catch((error) =>
        log.warn("Connection failed: {error}", { error: String(error) })
      );
    }
  })().catch(() => {});
  const addr = listener.addr as Deno.NetAddr;
  log.info("Chat server listening on {host}:{port}", { host: addr.hostname, port: addr.port });

  async function handle(conn: Deno.TcpConn): Promise<void> {
    const address = (conn.remoteAddr as Deno.NetAddr).hostname;
    open.add(conn);
    const writer = conn.writable.getWriter();
    let closed = false;
    const send = (message: ServerMessage) => {
      if (closed) return;
      writer.write(encodeFrame(message)).catch(() => close());
    };
    const close = () => {
      if (closed) return;
      closed = true;
      // Queued frames (a last error or bye) go out before the socket closes.
      writer.close().catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch { /* closed */ }
      });
    };
    const held = perAddress.get(address) ?? 0;
    perAddress.set(address, held + 1);
    let client: Client | undefined;
    try {
      if (stopping) {
        send(errorMessage("shutting_down", "the server is shutting down"));
        return;
      }
      if (held >= config.maxConnectionsPerAddress) {
        send(errorMessage("too_many_connections", `already ${held} connections from your address`));
        return;
      }
      const frames = new FrameDecoder();
      const reader = conn.readable.getReader();
      let tokens = config.messagesPerSecond * 2;
      let refilled = performance.now();
      let idle: ReturnType<typeof setTimeout> | undefined;
      const armIdle = () => {
        clearTimeout(idle);
        idle = setTimeout(() => {
          send({ type: "bye", reason: "idle" });
          close();
        }, config.idleTimeoutMs);
      };
      armIdle();
      try {
        for (;;) {
          const { value, done } = await reader.read().catch(() => ({
            value: undefined,
            done: true,
          }));
          if (done || closed) break;
          armIdle();
          let payloads: unknown[];
          try {
            payloads = frames.push(value!);
          } catch (error) {
            const e = error as ProtocolError;
            send(errorMessage(e.code, e.message));
            return;
          }
          for (const payload of payloads) {
            let message: ClientMessage;
            try {
              message = parseClientMessage(payload);
            } catch (error) {
              send(errorMessage("bad_message", (error as Error).message));
              return;
            }
            if (!client) {
              if (message.type !== "hello") {
                send(errorMessage("handshake_required", "the first frame must be hello"));
                return;
              }
              client = await hello(message, send, close);
              if (!client) return;
              continue;
            }
            if (message.type === "send") {
              const now = performance.now();
              tokens = Math.min(
                config.messagesPerSecond * 2,
                tokens + ((now - refilled) / 1000) * config.messagesPerSecond,
              );
              refilled = now;
              if (tokens < 1) {
                send(
                  errorMessage(
                    "rate_limited",
                    `at most ${config.messagesPerSecond} messages a second`,
                    message.client_msg_id,
                  ),
                );
                continue;
              }
              tokens--;
            }
            if (message.type === "bye") return;
            if (message.type === "hello") {
              send(errorMessage("bad_message", "hello comes once, first"));
              return;
            }
            try {
              await command(client, message, send);
            } catch (error) {
              log.error("A command failed: {error}", { error: String(error) });
              send(errorMessage("internal", "the server failed; reconnect"));
              return;
            }
          }
        }
      } finally {
        clearTimeout(idle);
      }
    } finally {
      if (client && rooms.get(client.room)?.get(client.name)?.send === send) {
        rooms.get(client.room)!.delete(client.name);
        if (!rooms.get(client.room)!.size) rooms.delete(client.room);
      }
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left) perAddress.set(address, left);
      else perAddress.delete(address);
      open.delete(conn);
      close();
    }
  }

  async function hello(
    message: Extract<ClientMessage, { type: "hello" }>,
    send: (m: ServerMessage) => void,
    close: () => void,
  ): Promise<Client | undefined> {
    if (message.version !== PROTOCOL_VERSION) {
      send(errorMessage("unsupported_version", `this server speaks version ${PROTOCOL_VERSION}`));
      return undefined;
    }
    let join;
    try {
      join = await store.join(message.room, message.name);
    } catch (error) {
      log.warn("Join failed: {error}", { error: String(error) });
      send(errorMessage("unavailable", "the database is unavailable; try again shortly"));
      return undefined;
    }
    if (!join.ok) {
      send(errorMessage("room_full", "this room already has its two parties"));
      return undefined;
    }
    const client: Client = {
      send,
      close,
      name: message.name,
      room: message.room,
      party: join.party,
      floor: join.lastId,
      pushed: new Set(),
    };
    const members = rooms.get(message.room) ?? new Map<string, Client>();
    rooms.set(message.room, members);
    const previous = members.get(message.name);
    if (previous) {
      previous.send({ type: "bye", reason: "replaced by a newer connection with your name" });
      previous.close();
    }
    members.set(message.name, client);
    send({
      type: "welcome",
      version: PROTOCOL_VERSION,
      party: join.party,
      peer: join.peer,
      last_id: join.lastId,
    });
    const offers = await store.keyOffers(message.room).catch(() => []);
    for (const offer of offers) if (offer.party !== join.party) send(peerKey(offer));
    log.debug("A party joined a room ({parties} connected in it)", { parties: members.size });
    return client;
  }

  async function command(
    client: Client,
    message: Exclude<ClientMessage, { type: "hello" | "bye" }>,
    send: (m: ServerMessage) => void,
  ): Promise<void> {
    switch (message.type) {
      case "heartbeat":
        return send({ type: "heartbeat" });
      case "key_offer": {
        if (!verifyKeyOffer(client.room, client.party, message)) {
          return send(
            errorMessage(
              "bad_proof",
              "the proof does not show possession of this key for this room and party",
            ),
          );
        }
        try {
          const publicKey = Uint8Array.from(
            message.public_key.match(/../g)!,
            (h) => parseInt(h, 16),
          );
          await store.saveKeyOffer(client.room, client.party, publicKey, message.proof);
        } catch {
          return send(
            errorMessage("unavailable", "the database is unavailable; offer again shortly"),
          );
        }
        return;
      }
      case "send": {
        const ciphertext = base64.decode(message.ciphertext);
        if (ciphertext.length > MAX_CIPHERTEXT_BYTES) {
          return send(
            errorMessage(
              "message_too_large",
              `a ciphertext of ${ciphertext.length} bytes; at most ${MAX_CIPHERTEXT_BYTES}`,
              message.client_msg_id,
            ),
          );
        }
        try {
          const { message: row } = await store.insertMessage(
            client.room,
            client.name,
            message.client_msg_id,
            base64.decode(message.nonce),
            ciphertext,
          );
          // Acknowledged only once committed; a retry of a stored message gets the same id.
          return send({
            type: "stored",
            client_msg_id: row.clientMsgId,
            id: row.id,
            created_at: row.createdAt.toISOString(),
          });
        } catch (error) {
          log.warn("Storing a message failed: {error}", { error: String(error) });
          return send(
            errorMessage(
              "unavailable",
              "the database is unavailable; send again",
              message.client_msg_id,
            ),
          );
        }
      }
      case "history": {
        try {
          const page = await store.history(client.room, {
            ...(message.before === undefined ? {} : { before: message.before }),
            ...(message.after === undefined ? {} : { after: message.after }),
            limit: message.limit ?? 50,
          });
          return send({
            type: "history_page",
            messages: page.messages.map(wire),
            has_more: page.hasMore,
          });
        } catch {
          return send(errorMessage("unavailable", "the database is unavailable; ask again"));
        }
      }
    }
  }

  return {
    addr,
    get connections() {
      return open.size;
    },
    async shutdown() {
      stopping = true;
      listener.close();
      await serving;
      for (const members of rooms.values()) {
        for (const client of members.values()) {
          client.send({ type: "bye", reason: "the server is shutting down" });
          client.close();
        }
      }
      for (const conn of open) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
      await store.close();
      log.info("Chat server stopped");
    },
  };
}

function peerKey(
  offer: { party: 0 | 1; name: string; publicKey: Uint8Array; proof: { t: string; s: string } },
): ServerMessage {
  return {
    type: "peer_key",
    name: offer.name,
    party: offer.party,
    public_key: Array.from(offer.publicKey, (b) => b.toString(16).padStart(2, "0")).join(""),
    proof: offer.proof,
  };
}
