/**
 * The chat app's public surface: what `duet chat`, `duet chat-server`, `duet serve`, the
 * benchmarks and the tests use. Each name comes from the module that owns it; the wire
 * format is described in docs/chat-protocol.md.
 *
 * - The server: {@link startChatServer} on a {@link ChatStore} ({@link connectPostgres} or
 *   {@link openPglite}).
 * - The client: {@link ChatClient}, with its {@link KeyStore}; {@link runLineMode} is the
 *   scriptable front end (`duet chat --line`), `@duet/chat/tui` the terminal one.
 * - The wire: {@link encodeFrame} and {@link FrameDecoder}.
 *
 * @module
 */
export {
  encodeFrame,
  FrameDecoder,
  HEARTBEAT_MS,
  NAME,
  PROTOCOL_VERSION,
  ROOM,
  type WireMessage,
} from "./protocol.ts";
export { MAX_TEXT_BYTES } from "./crypto.ts";
export {
  type BindOutcome,
  ChatStore,
  type CodeOffer,
  type CodeWire,
  connectPostgres,
  isUnavailable,
  type Join,
  type KeyChange,
  type KeyOffer,
  type MessageRow,
  openPglite,
  type PostgresOptions,
  type PutCodeOutcome,
  type SqlDriver,
  type StoreEvent,
  type StoreOutcome,
} from "./store.ts";
export {
  type ChatServerConfig,
  DEFAULTS,
  type RunningChatServer,
  startChatServer,
} from "./server.ts";
export type { RunningService } from "@duet/core/service";
export {
  type AcceptOutcome,
  ChatClient,
  type ChatClientOptions,
  type ClientEvent,
  type ConnectionState,
  DEFAULT_BACKOFF,
  type MessageView,
  type Presence,
} from "./client.ts";
export {
  type Conversation,
  defaultKeyStorePath,
  duetDataDir,
  KeyStore,
  type OutboxEntry,
  type PeerKey,
  type Sealed,
} from "./keystore.ts";
export type { CodeAttemptRule } from "./limits.ts";
export { type LineModeOptions, type LineModeResult, runLineMode } from "./line.ts";
