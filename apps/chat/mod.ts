export * from "./protocol.ts";
export * from "./store.ts";
export * from "./crypto.ts";
export * from "./server.ts";
export * from "./keystore.ts";
export * from "./client.ts";
export * from "./line.ts";
