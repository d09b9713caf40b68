/**
 * The chat app's public surface: what `duet chat`, `duet chat-server`, `duet serve`, the
 * benchmarks and the tests use. Each name comes from the module that owns it; the wire
 * format is described in docs/chat-protocol.md.
 *
 * @module
 */
export { encodeFrame, FrameDecoder, NAME, PROTOCOL_VERSION, ROOM } from "./protocol.ts";
export { MAX_TEXT_BYTES } from "./crypto.ts";
export { ChatStore, connectPostgres, isUnavailable, openPglite } from "./store.ts";
export {
  type ChatServerConfig,
  DEFAULTS,
  type RunningChatServer,
  startChatServer,
} from "./server.ts";
export {
  ChatClient,
  type ChatClientOptions,
  type ClientEvent,
  type ConnectionState,
  type MessageView,
} from "./client.ts";
export { defaultKeyStorePath, duetDataDir, KeyStore } from "./keystore.ts";
export { type LineModeOptions, type LineModeResult, runLineMode } from "./line.ts";
