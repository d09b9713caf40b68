// The benchmark anchor for wsPing (packages/wsping/wsping_bench.ts, bench/wsping/run.ts): the
// same ping (timeout timer, listener clean-up, close) in plain TypeScript, no WebAssembly.

/** The anchor: the same ping in plain TypeScript. */
export function plainPing(url: string, message: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const done = () => {
      clearTimeout(timer);
      socket.removeEventListener("open", onOpen);
      socket.removeEventListener("message", onMessage);
      socket.removeEventListener("error", onError);
      socket.removeEventListener("close", onError);
    };
    const onOpen = () => socket.send(message);
    const onMessage = (event: MessageEvent) => {
      done();
      socket.close(1000);
      if (typeof event.data === "string") resolve(event.data);
      else reject(new Error("binary"));
    };
    const onError = () => {
      done();
      reject(new Error("failed"));
    };
    socket.addEventListener("open", onOpen);
    socket.addEventListener("message", onMessage);
    socket.addEventListener("error", onError);
    socket.addEventListener("close", onError);
    const timer = setTimeout(() => {
      done();
      socket.close();
      reject(new Error("timeout"));
    }, timeoutMs);
  });
}
