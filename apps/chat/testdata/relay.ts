/**
 * A relay that sits between chat clients and the server (real TCP), reading every frame
 * both ways and letting a test rewrite them: the server, or anyone in its place, as the
 * clients' threat model has it. {@link substitutingRelay} is the attack a code defeats: it
 * hands each client a key of its own in place of the peer's and, if given a guess, runs its
 * own CPace with each client under that guess.
 */
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { offerFor } from "../crypto.ts";
import {
  type CodeFrame,
  codeFrameFromWire,
  codeFrameToWire,
  type CodeRun,
  type CodeState,
  initialCodeState,
  onPeerCode,
  onPeerKey,
  startCodeRun,
} from "../code_core.ts";
import {
  type CodeWire,
  encodeFrame,
  FrameDecoder,
  parseServerMessage,
  type ServerMessage,
  type WireMessage,
} from "../protocol.ts";

/** One client's connection through the relay. */
export interface RelayedConnection {
  /** The party the welcome gave the client (null before it). */
  party: 0 | 1 | null;
  /** Sends a frame to the client, as if from the server. */
  toClient(message: WireMessage): void;
  /** Sends a frame to the server, as if from the client. */
  toServer(message: WireMessage): void;
}

/** How the relay rewrites: each hook returns the frames to pass on instead of the one read. */
export interface RelayHooks {
  fromServer?(conn: RelayedConnection, message: ServerMessage): WireMessage[];
  fromClient?(conn: RelayedConnection, message: WireMessage): WireMessage[];
}

/** A running relay: clients connect to `port`. */
export interface ChatRelay extends AsyncDisposable {
  readonly port: number;
  readonly connections: RelayedConnection[];
}

/** Starts a relay to the chat server at 127.0.0.1:`serverPort`. */
export function startRelay(serverPort: number, hooks: RelayHooks = {}): ChatRelay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections: RelayedConnection[] = [];
  const sockets = new Set<Deno.Conn>();
  const accepting = (async () => {
    for await (const client of listener) {
      sockets.add(client);
      pipe(client, serverPort, hooks, connections, sockets).catch(() => {}).finally(() => {
        for (const socket of [client]) {
          try {
            socket.close();
          } catch { /* closed */ }
        }
      });
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    connections,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const socket of sockets) {
        try {
          socket.close();
        } catch { /* closed */ }
      }
    },
  };
}

async function pipe(
  client: Deno.Conn,
  serverPort: number,
  hooks: RelayHooks,
  connections: RelayedConnection[],
  sockets: Set<Deno.Conn>,
): Promise<void> {
  const server = await Deno.connect({ hostname: "127.0.0.1", port: serverPort });
  sockets.add(server);
  const toClient = client.writable.getWriter();
  const toServer = server.writable.getWriter();
  const conn: RelayedConnection = {
    party: null,
    toClient: (m) => void toClient.write(encodeFrame(m)).catch(() => {}),
    toServer: (m) => void toServer.write(encodeFrame(m)).catch(() => {}),
  };
  connections.push(conn);
  const down = (async () => {
    const frames = new FrameDecoder();
    for await (const chunk of server.readable) {
      for (const payload of frames.push(chunk)) {
        const message = parseServerMessage(payload);
        if (message.type === "welcome") conn.party = message.party;
        for (const out of hooks.fromServer?.(conn, message) ?? [message]) conn.toClient(out);
      }
    }
  })();
  const up = (async () => {
    const frames = new FrameDecoder();
    for await (const chunk of client.readable) {
      for (const payload of frames.push(chunk)) {
        const message = payload as WireMessage;
        for (const out of hooks.fromClient?.(conn, message) ?? [message]) conn.toServer(out);
      }
    }
  })();
  await Promise.race([down, up]).catch(() => {});
  try {
    server.close();
  } catch { /* closed */ }
}

/**
 * The man in the middle: every `peer_key` a client gets is swapped for a key of the relay's
 * (with a valid proof of possession: the relay holds it), so that each client agrees a key
 * with the relay. With `guess`, it also answers each client's code run itself, as the
 * client's peer, under the guessed code and with its own key in the message (so that the
 * key check passes), and drops the clients' real code frames.
 *
 * @param room The room the clients meet in (the proofs are bound to it).
 */
export function substitutingRelay(room: string, guess?: string): RelayHooks {
  const secrets = [secp256k1.utils.randomSecretKey(), secp256k1.utils.randomSecretKey()];
  const relayKey = (party: 0 | 1) => bytesToHex(secp256k1.getPublicKey(secrets[party]!, true));
  /** Per client party: the relay's run posing as that client's peer. */
  const runs = new Map<0 | 1, { run: CodeRun; state: CodeState; clientKey: string | null }>();
  const send = (conn: RelayedConnection, frame: CodeFrame) =>
    conn.toClient({
      type: "peer_code",
      name: "mallory",
      party: conn.party === 0 ? 1 : 0,
      ...codeFrameToWire(frame),
    });
  return {
    fromServer(_conn, message) {
      if (message.type === "peer_key") {
        const offer = offerFor(secrets[message.party]!, room, message.party);
        return [{ type: "peer_key", name: message.name, party: message.party, ...offer }];
      }
      if (guess !== undefined && message.type === "peer_code") return [];
      if (guess !== undefined && message.type === "welcome" && !runs.has(message.party)) {
        const peer = message.party === 0 ? 1 : 0;
        const run = startCodeRun({
          code: guess,
          service: message.service,
          room,
          party: peer,
          publicKey: relayKey(peer),
        });
        runs.set(message.party, { run, state: initialCodeState(run), clientKey: null });
      }
      return [message];
    },
    fromClient(conn, message) {
      if (guess === undefined || conn.party === null) return [message];
      const mine = runs.get(conn.party);
      if (!mine) return [message];
      if (message.type === "key_offer") {
        mine.clientKey = message["public_key"] as string;
        mine.state = onPeerKey(mine.state, mine.run, mine.clientKey).state;
        send(conn, mine.state.frame);
        return [message];
      }
      if (message.type !== "code") return [message];
      const frame = codeFrameFromWire(message as unknown as CodeWire);
      const step = onPeerCode(mine.state, mine.run, frame, mine.clientKey);
      mine.state = step.state;
      for (const command of step.commands) if (command.type === "send") send(conn, command.frame);
      return []; // the client's real frame never reaches the server
    },
  };
}
