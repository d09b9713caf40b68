/**
 * A rendezvous shared by several syncpoint instances through Redis.
 *
 * The pairing protocol (every state change is one Lua script, so it is atomic):
 *
 * 1. A party arrives on instance A. A notes the party locally under a fresh token *before*
 *    asking Redis (the wake-up from another instance may beat Redis's reply).
 * 2. `register-or-claim` on key `wait:<id>`: if free, it stores {state: waiting, token,
 *    instance A, payload} with a TTL and the party waits (is *held*) on A. If a party is
 *    waiting, the key becomes {state: claimed, claim, cinstance, cpayload} (the claimer's
 *    token, instance and payload, and a deadline of `ackTimeoutMs` x 2 + 1 s); if it is
 *    already claimed, the newcomer is a third party and gets 409, unless the claim is past
 *    its deadline: its claimer died before the wake-up (a live one has abandoned by then),
 *    and the newcomer claims the waiter instead. The waiter's own re-registration (below)
 *    returns such a key to `waiting`. So a claimer's crash never strands its waiter.
 * 3. The claimer (instance B) publishes a small `wake` {id, waiter, claim} on A's channel
 *    and waits for A's `ack`. A answers with one script, `confirm`: only if the claim is
 *    still current (and not abandoned) it deletes the wait key, records the verdict under
 *    `ack:<claim>` (short TTL), publishes the ack, and returns the claimer's payload. A
 *    settles its party as paired only when `confirm` succeeded. If A's party left (or its
 *    presence probe says so), A confirms `gone` instead and B starts the arrival over,
 *    usually as a first party. So nobody is ever paired with a party that left.
 * 4. No ack within `ackTimeoutMs` (A died, or the wake or the ack was lost on a pub/sub
 *    connection that was cut): B runs `abandon`, which reads `ack:<claim>` first
 *    (`delivered`: B is paired after all; `gone`: start over) and otherwise deletes the wait
 *    key if the claim is still current and records `abandoned`, so a late `confirm` fails.
 *    A, whose `confirm` fails that way, registers its party again at once.
 * 5. A held party that times out or hangs up deletes its key only if it is still `waiting`
 *    under its token; a claim in flight then finds it gone (step 3).
 *
 * Every interleaving is safe: a pair completes exactly when `confirm` succeeds, which happens
 * at most once per claim and never after `abandon`; both sides learn it from Redis (the
 * script's reply, or the ack, or `ack:<claim>`). Where a side cannot learn it (a reply lost
 * and Redis restarted since) that side gets 503 `backend_unavailable`, never a second pair.
 *
 * Redis unreachable: arrivals fail at once with `backend_unavailable` (503); ioredis
 * reconnects by itself and re-subscribes. Held parties are kept through an outage. When Redis
 * or either connection is ready again, the instance *reconciles*: it registers every held
 * party again with the same script (its own key missing, as after a Redis restart: written
 * again; its key claimed meanwhile: it confirms that claim, whose wake may have been lost;
 * another party waiting on the id: it claims that party as in step 3). So a pair whose
 * parties waited across a restart or a cut still completes. A held party whose timeout fires
 * while Redis is unreachable, or before it was registered again, gets `backend_unavailable`
 * rather than `timeout`: it was not findable all that time.
 *
 * Load: the commands connection carries at most `windowBytes` of payloads at a time (the
 * others queue here, up to `queueTimeoutMs`, then `capacity`), so the command timeout times
 * Redis and not this process's own backlog (see {@link RedisRendezvousOptions.windowBytes}).
 *
 * @module
 */
import { checkDuration } from "@duet/core/duration";
import { Redis } from "ioredis";
import { getLogger } from "@logtape/logtape";
import {
  type Arrival,
  ledgerFor,
  type Outcome,
  payloadCost,
  type Refusal,
  type Rendezvous,
  type RendezvousEvents,
  type RendezvousLimits,
} from "./rendezvous.ts";
import type { WaitingLedger } from "./limits.ts";
import { MAX_TIMEOUT_MS, setLongTimeout } from "@duet/core/long-timeout";
import { delay } from "@duet/core/delay";
import {
  AbandonReply,
  type Ack,
  ConfirmReply,
  parseMessage,
  RegisterReply,
  replyOf,
  type Wake,
} from "./redis_messages.ts";

/** Options of {@link RedisRendezvous.connect}; the limits apply to this instance. */
export interface RedisRendezvousOptions extends RendezvousLimits {
  /** Most parties waiting at once on this instance. */
  maxWaiting: number;
  /** Event hooks for metrics. */
  events?: RendezvousEvents;
  /** Key and channel prefix, so several services can share one Redis. */
  prefix?: string;
  /**
   * How long a claimer waits for the first party's instance to confirm (2,000 ms); keep it
   * well above a presence probe (up to ~600 ms) plus a command round trip. 1 to
   * {@link MAX_TIMEOUT_MS}, else connect() throws a RangeError.
   */
  ackTimeoutMs?: number;
  /**
   * Milliseconds a Redis command may take, once sent, before it counts as a failure (1,000
   * ms); 1 to {@link MAX_TIMEOUT_MS}, else connect() throws a RangeError.
   */
  commandTimeoutMs?: number;
  /**
   * Payload bytes (UTF-16 code units of the payload arguments) on their way to Redis at once
   * (4 MiB). Without a window, a burst of large arrivals queues up in the client's socket and
   * commands time out behind this process's own backlog while Redis is healthy.
   */
  windowBytes?: number;
  /**
   * How long an arrival may queue for the window before it is refused `capacity` (5,000
   * ms); 0 to {@link MAX_TIMEOUT_MS}, else connect() throws a RangeError.
   */
  queueTimeoutMs?: number;
}

/**
 * register-or-claim. KEYS[1] wait key; ARGV: token, instance, payload, has-payload ("0"/"1"),
 * wait ttl ms, claim ttl ms, and optionally the claim token (default: the token).
 * Replies: {'registered'} (also when the key is already waiting under this token: TTL
 * renewed); {'claimed', waiter token, waiter instance, payload, has} (a waiting party was
 * claimed, or a claim past its deadline taken over); {'pending', claim, claimer instance}
 * (the key is this token's and claimed: the claim's wake may have been lost; a claim past
 * its deadline is dropped instead and the key is waiting again); {'conflict'} (another pair
 * is being completed). The key outlives a claim's deadline while its waiter waits.
 * Exported for the tests, which play a claimer that dies.
 */
export const REGISTER_OR_CLAIM = `
local state = redis.call('HGET', KEYS[1], 'state')
local claim = ARGV[7] or ARGV[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if not state then
  redis.call('HSET', KEYS[1], 'state', 'waiting', 'token', ARGV[1], 'instance', ARGV[2],
    'payload', ARGV[3], 'has', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'registered'}
end
-- A claim past its deadline: its claimer died between claim and wake-up (a live one has
-- abandoned by then). It no longer holds the waiter.
local stale = state == 'claimed' and tonumber(redis.call('HGET', KEYS[1], 'cdeadline')) < now
local token = redis.call('HGET', KEYS[1], 'token')
if token == ARGV[1] then
  if stale then
    redis.call('HSET', KEYS[1], 'state', 'waiting')
    redis.call('HDEL', KEYS[1], 'claim', 'cinstance', 'cpayload', 'chas', 'cdeadline')
    state = 'waiting'
  end
  if state == 'waiting' then
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {'registered'}
  end
  local f = redis.call('HMGET', KEYS[1], 'claim', 'cinstance')
  return {'pending', f[1], f[2]}
elseif state == 'waiting' or stale then
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'claim', claim, 'cinstance', ARGV[2],
    'cpayload', ARGV[3], 'chas', ARGV[4], 'cdeadline', now + tonumber(ARGV[6]))
  -- Kept while its waiter waits, so that a dead claim can be taken over.
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[6]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[6])
  end
  local f = redis.call('HMGET', KEYS[1], 'token', 'instance', 'payload', 'has')
  return {'claimed', f[1], f[2], f[3], f[4]}
end
return {'conflict'}`;

// KEYS[1] wait key; ARGV: field, value. Deletes the key if field == value (and, for the
// token, only while it is still waiting: a claim in flight is answered by `confirm`).
const DELETE_IF = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  if ARGV[1] ~= 'token' or redis.call('HGET', KEYS[1], 'state') == 'waiting' then
    return redis.call('DEL', KEYS[1])
  end
end
return 0`;

/**
 * confirm, on the waiter's instance. KEYS[1] wait key, KEYS[2] ack key, KEYS[3] kept-payload
 * key; ARGV: waiter token, claim, verdict ('delivered' or 'gone'), ack ttl ms, ack channel,
 * ack message, kept-payload ttl ms.
 * Replies {'ok', claimer payload, has} when the claim was current (key deleted, verdict
 * recorded and published, and on 'delivered' the claimer's payload kept for a while: a
 * retry whose first reply was lost gets it), else {'stale', recorded verdict or '', kept
 * payload ('0' or '1' then the payload) or ''}.
 */
const CONFIRM = `
if redis.call('HGET', KEYS[1], 'claim') == ARGV[2] and redis.call('HGET', KEYS[1], 'token') == ARGV[1]
  and redis.call('EXISTS', KEYS[2]) == 0 then
  local f = redis.call('HMGET', KEYS[1], 'cpayload', 'chas')
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  if ARGV[3] == 'delivered' then
    redis.call('SET', KEYS[3], f[2] .. f[1], 'PX', ARGV[7])
  end
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return {'ok', f[1], f[2]}
end
return {'stale', redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or ''}`;

/**
 * abandon, on the claimer's instance. KEYS[1] wait key, KEYS[2] ack key; ARGV: claim, ack
 * ttl ms, channel prefix, id. Replies the recorded verdict ('delivered', 'gone', or
 * 'abandoned' when an earlier abandon ran). Otherwise: if the claim is current, deletes the
 * wait key and publishes `lost` to the waiter's instance (which registers its party again);
 * if the key is still waiting under the claim token itself (an arrival's registration whose
 * reply was lost), deletes it; then records and replies 'abandoned'. Idempotent.
 */
const ABANDON = `
local verdict = redis.call('GET', KEYS[2])
if verdict then return verdict end
local f = redis.call('HMGET', KEYS[1], 'state', 'token', 'claim', 'instance')
if f[3] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3] .. f[4], cjson.encode({type = 'lost', id = ARGV[4], waiter = f[2]}))
elseif f[1] == 'waiting' and f[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], 'abandoned', 'PX', ARGV[2])
return 'abandoned'`;

/**
 * Payloads larger than this (characters) that `confirm` kept are deleted once the reply is
 * in; smaller ones are left to their TTL (a command per pair costs more than they do).
 */
const KEPT_DELETE_ABOVE = 1_024;

/** How long `ack:<claim>` records outlive their claim (longer than any party waits). */
const ACK_TTL_MS = 90_000;
const MAX_ATTEMPTS = 5;
/** Pause between retries of a command whose outcome must be known. */
const RETRY_MS = 100;

/** What a claimer learns: from the ack or `abandon` (delivered, gone, abandoned), or not. */
type Verdict = "delivered" | "gone" | "abandoned" | "unknown" | "closing";

/** A party of this instance, from its arrival until it is answered. */
interface Party {
  readonly token: string;
  readonly arrival: Arrival;
  readonly bytes: number;
  readonly since: number;
  /** performance.now() at which it times out. */
  readonly deadline: number;
  /** Past the registration reply: timer and signal armed, reconciled after outages. */
  held: boolean;
  /** Whether its key is believed to be in Redis (false from an outage until re-registered). */
  registered: boolean;
  settled: boolean;
  /** Redis work for this party, one piece at a time (answering claims, re-registering). */
  chain: Promise<void>;
  /** Pieces of work running; while > 0 a timeout or hang-up waits for them (`deferred`). */
  busy: number;
  deferred?: "timeout" | "departed";
  /** Cancels its timeout (a long timer: a wait may be longer than `setTimeout`'s range). */
  cancelTimer?: () => void;
  onAbort?: () => void;
  /** Its outcome, once settled. */
  readonly promise: Promise<Outcome>;
  resolve(outcome: Outcome): void;
}

type RedisWithScripts = Redis & {
  registerOrClaim(key: string, ...args: (string | number)[]): Promise<string[]>;
  deleteIf(key: string, field: string, value: string): Promise<number>;
  confirm(
    waitKey: string,
    ackKey: string,
    keptKey: string,
    ...args: (string | number)[]
  ): Promise<string[]>;
  abandon(waitKey: string, ackKey: string, ...args: (string | number)[]): Promise<string>;
};

/** A command that certainly never reached Redis (connection down, or refused by the window). */
class NotSent extends Error {
  override name = "NotSent";
}

/** The window's queue waited too long: the link to Redis is saturated (never sent). */
class Overloaded extends NotSent {
  override name = "Overloaded";
}

/**
 * A window over the commands connection: runs `fn` once the payload bytes in flight plus
 * `cost` fit `maxBytes` (one command always fits), first come first served. Queued calls
 * reject with {@link Overloaded} after `queueTimeoutMs`, or with {@link NotSent} on
 * {@link flush}.
 */
class SendWindow {
  #inFlight = 0;
  readonly #queue: { cost: number; grant(): void; fail(error: Error): void }[] = [];

  constructor(readonly maxBytes: number, readonly queueTimeoutMs: number) {}

  async run<T>(cost: number, fn: () => Promise<T>): Promise<T> {
    if (this.#queue.length > 0 || (this.#inFlight > 0 && this.#inFlight + cost > this.maxBytes)) {
      await new Promise<void>((resolve, reject) => {
        const entry = {
          cost,
          grant: () => {
            clearTimeout(timer);
            resolve();
          },
          fail: (error: Error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
        const timer = setTimeout(() => {
          this.#queue.splice(this.#queue.indexOf(entry), 1);
          reject(new Overloaded(`queued for ${this.queueTimeoutMs} ms behind other payloads`));
          this.#pump();
        }, this.queueTimeoutMs);
        this.#queue.push(entry);
      });
    } else {
      this.#inFlight += cost;
    }
    try {
      return await fn();
    } finally {
      this.#inFlight -= cost;
      this.#pump();
    }
  }

  /** Rejects everything queued (the connection is gone: nothing queued could be sent). */
  flush(reason: string): void {
    for (const entry of this.#queue.splice(0)) entry.fail(new NotSent(reason));
  }

  #pump(): void {
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!;
      if (this.#inFlight > 0 && this.#inFlight + next.cost > this.maxBytes) return;
      this.#queue.shift();
      this.#inFlight += next.cost;
      next.grant();
    }
  }
}

const log = getLogger(["duet", "syncpoint", "redis"]);

/**
 * The durations of `options`, each a number of ms from its minimum to MAX_TIMEOUT_MS (the
 * timers that use them, here and in ioredis, are plain `setTimeout`s).
 *
 * @throws {RangeError} naming the option.
 */
function checkDurations(options: RedisRendezvousOptions): void {
  const max = MAX_TIMEOUT_MS;
  const { ackTimeoutMs, commandTimeoutMs, queueTimeoutMs } = options;
  if (ackTimeoutMs !== undefined) checkDuration("ackTimeoutMs", ackTimeoutMs, { zero: false, max });
  if (commandTimeoutMs !== undefined) {
    checkDuration("commandTimeoutMs", commandTimeoutMs, { zero: false, max });
  }
  if (queueTimeoutMs !== undefined) checkDuration("queueTimeoutMs", queueTimeoutMs, { max });
}

/** Pairs parties that reached different instances, through one Redis server. */
export class RedisRendezvous implements Rendezvous {
  readonly #redis: RedisWithScripts;
  readonly #subscriber: Redis;
  readonly #instance = crypto.randomUUID();
  readonly #parties = new Map<string, Party>(); // by token
  readonly #acks = new Map<string, (verdict: Verdict) => void>(); // by claim
  /** Claims whose outcome this instance could not settle in Redis yet: claim -> id. */
  readonly #pendingAbandons = new Map<string, string>();
  readonly #options: { prefix: string; ackTimeoutMs: number };
  /** Commands that timed out while the connection was up: a warning, at most once a minute. */
  readonly #timeouts = new TimeoutWarnings();
  /**
   * How long `confirm` keeps a claimer's payload for a retry of a confirmation whose reply
   * was lost: two command timeouts and a retry pause, at least 2.5 s.
   */
  readonly #keptMs: number;
  readonly #events: RendezvousEvents;
  readonly #ledger: WaitingLedger;
  readonly #window: SendWindow;
  #closing = false;
  /** A reconciliation is due (a connection became ready) and has not started yet. */
  #reconcileDue = false;
  #reconciling = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Whether a connection was lost since the start (the next reconciliation is logged). */
  #recovering = false;

  private constructor(redis: Redis, subscriber: Redis, options: RedisRendezvousOptions) {
    this.#redis = redis as RedisWithScripts;
    this.#subscriber = subscriber;
    this.#events = options.events ?? {};
    this.#ledger = ledgerFor(options);
    this.#options = {
      prefix: options.prefix ?? "duet:syncpoint",
      ackTimeoutMs: options.ackTimeoutMs ?? 2_000,
    };
    this.#keptMs = Math.max(2_500, 2 * (options.commandTimeoutMs ?? 1_000) + 500);
    this.#window = new SendWindow(
      options.windowBytes ?? 4 * 1024 * 1024,
      options.queueTimeoutMs ?? 5_000,
    );
    redis.defineCommand("registerOrClaim", { numberOfKeys: 1, lua: REGISTER_OR_CLAIM });
    redis.defineCommand("deleteIf", { numberOfKeys: 1, lua: DELETE_IF });
    redis.defineCommand("confirm", { numberOfKeys: 3, lua: CONFIRM });
    redis.defineCommand("abandon", { numberOfKeys: 2, lua: ABANDON });
    subscriber.on("message", (_channel: string, message: string) => this.#onMessage(message));
    for (const client of [redis, subscriber]) {
      client.on("ready", () => this.#scheduleReconcile());
      client.on("close", () => this.#onConnectionLost());
    }
  }

  /**
   * Connects to Redis and subscribes to this instance's channel. When Redis is not reachable
   * yet, it still returns: arrivals get `backend_unavailable` until Redis answers.
   */
  static async connect(url: string, options: RedisRendezvousOptions): Promise<RedisRendezvous> {
    checkDurations(options);
    const commandTimeout = options.commandTimeoutMs ?? 1_000;
    const common = {
      lazyConnect: true,
      connectTimeout: 2_000,
      // Reconnect for ever, at most every 2 s: the service recovers when Redis returns.
      retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
    };
    // Fail fast instead of queueing commands while Redis is away.
    const redis = new Redis(url, {
      ...common,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout,
    });
    const subscriber = new Redis(url, { ...common, maxRetriesPerRequest: null });
    for (const [name, client] of [["commands", redis], ["subscriber", subscriber]] as const) {
      // An outage is logged once when it starts (and once when it ends), not at every
      // reconnection attempt.
      let down = false;
      client.on("error", (error: Error) => {
        if (down) {
          log.debug(`Redis ${name} connection still down: {message}`, { message: error.message });
        } else {
          down = true;
          log.warn(`Redis ${name} connection: {message}`, { message: error.message });
        }
      });
      client.on("ready", () => {
        down = false;
        log.info(`Redis ${name} connection ready`);
      });
    }
    const rendezvous = new RedisRendezvous(redis, subscriber, options);
    await Promise.allSettled([redis.connect(), subscriber.connect()]);
    // Queued until the subscriber connects, and re-subscribed by ioredis after reconnects.
    subscriber.subscribe(rendezvous.#channel(rendezvous.#instance)).catch((error: Error) => {
      log.warn("Cannot subscribe yet: {message}", { message: error.message });
    });
    return rendezvous;
  }

  get waiting(): number {
    return this.#ledger.waiting;
  }

  get waitingBytes(): number {
    return this.#ledger.bytes;
  }

  /**
   * Whether both Redis connections are up and the held parties are being registered again
   * after the last outage (for health checks).
   */
  get healthy(): boolean {
    return !this.#closing && this.#connected && !this.#reconcileDue;
  }

  get #connected(): boolean {
    return this.#redis.status === "ready" && this.#subscriber.status === "ready";
  }

  #key(id: string): string {
    return `${this.#options.prefix}:wait:${id}`;
  }

  #ackKey(claim: string): string {
    return `${this.#options.prefix}:ack:${claim}`;
  }

  /** Where `confirm` keeps a claimer's payload for a retry whose reply was lost. */
  #keptKey(claim: string): string {
    return `${this.#options.prefix}:kept:${claim}`;
  }

  #channel(instance: string): string {
    return `${this.#options.prefix}:instance:${instance}`;
  }

  /** Runs a command on the commands connection; NotSent when it certainly did not go out. */
  async #command<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#redis.status !== "ready") {
      throw new NotSent(`Redis commands connection is ${this.#redis.status}`);
    }
    try {
      return await fn();
    } catch (error) {
      const message = (error as Error).message;
      if (/isn't writeable|enableOfflineQueue/.test(message)) throw new NotSent(message);
      if (/timed out/i.test(message)) this.#timeouts.note();
      throw error;
    }
  }

  /** register-or-claim for `party` (its token and payload), through the window. */
  #registerOrClaim(
    id: string,
    token: string,
    payload: string | null,
    waitTtlMs: number,
    claim = token,
  ): Promise<RegisterReply> {
    return this.#window.run(
      (payload?.length ?? 0) + 256,
      () =>
        this.#command(async () =>
          replyOf(
            RegisterReply,
            "register-or-claim",
            await this.#redis.registerOrClaim(
              this.#key(id),
              token,
              this.#instance,
              payload ?? "",
              payload === null ? "0" : "1",
              // A whole number of ms that Redis takes (an endless wait: as long as it allows).
              Math.min(Math.ceil(waitTtlMs), Number.MAX_SAFE_INTEGER),
              this.#options.ackTimeoutMs * 2 + 1_000,
              claim,
            ),
          )
        ),
    );
  }

  async arrive(arrival: Arrival): Promise<Outcome> {
    const started = performance.now();
    if (arrival.signal?.aborted) {
      // Gone before it arrived: neither held nor paired (see LocalRendezvous).
      this.#events.departed?.();
      return { kind: "departed", waitedMs: 0 };
    }
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (this.#closing) return refused("shutting_down", started);
      if (attempt > 0 && arrival.signal?.aborted) {
        // Hung up while its last attempt ran: not another one.
        this.#events.departed?.();
        return { kind: "departed", waitedMs: performance.now() - started };
      }
      const outcome = await this.#attempt(arrival, started);
      if (outcome !== "again") return outcome;
    }
    return refused("conflict", started);
  }

  async #attempt(arrival: Arrival, started: number): Promise<Outcome | "again"> {
    const { id, payload } = arrival;
    const token = crypto.randomUUID();
    const bytes = payloadCost(arrival);
    const refusal = this.#ledger.admit(arrival.address, bytes);
    // Noted before Redis is asked: the wake-up can arrive before Redis's reply.
    const party = refusal ? undefined : this.#note(token, arrival, bytes);
    let reply: RegisterReply;
    try {
      // Outlives its party; cleans up after a crashed instance.
      reply = await this.#registerOrClaim(id, token, payload, arrival.timeoutMs + 5_000);
    } catch (error) {
      if (party) this.#drop(party);
      if (!(error instanceof NotSent)) {
        // Perhaps it ran: a key of ours (registered: a claimer is told "gone") or a claim of
        // ours that nobody will wake; abandon it as soon as Redis answers.
        this.#abandon(id, token, this.#options.ackTimeoutMs).catch(() => {});
      }
      if (error instanceof Overloaded) {
        log.debug("Redis link saturated: {message}", { message: error.message });
        return refused("capacity", started);
      }
      // Expected while Redis is away, and then at every arrival: the connection's outage
      // is logged once (connect()); this is detail.
      log.debug("Redis unavailable: {message}", { message: (error as Error).message });
      return refused("backend_unavailable", started);
    }
    switch (reply[0]) {
      case "registered":
        if (!party) {
          // Full here: undo the registration (it cannot have been claimed for long).
          await this.#command(() => this.#redis.deleteIf(this.#key(id), "token", token))
            .catch(() => 0);
          return refused(refusal ?? "capacity", started);
        }
        return this.#hold(party);
      case "claimed": {
        if (party) this.#drop(party);
        const [, waiter, instance, storedPayload, has] = reply;
        const verdict = await this.#claim(id, token, waiter, instance, arrival.signal);
        if (arrival.signal?.aborted && verdict !== "delivered") {
          // Hung up while its claim was answered: abandoned, the waiter waits on.
          this.#events.departed?.();
          return { kind: "departed", waitedMs: performance.now() - started };
        }
        switch (verdict) {
          case "delivered":
            return {
              kind: "paired",
              role: "second",
              waitedMs: performance.now() - started,
              peerPayload: has === "1" ? storedPayload : null,
            };
          case "gone":
          case "abandoned":
            return "again";
          case "closing":
            return refused("shutting_down", started);
          case "unknown":
            return refused("backend_unavailable", started);
        }
        break;
      }
    }
    if (party) this.#drop(party);
    return refused("conflict", started);
  }

  /**
   * Wakes the waiting party on `instance` and learns whether the pair completed: from the
   * ack, or (none in time) from `abandon`. "unknown" when Redis could not tell in time; the
   * claim is then abandoned at the next reconciliation.
   */
  async #claim(
    id: string,
    claim: string,
    waiter: string,
    instance: string,
    signal: AbortSignal | undefined,
  ): Promise<Verdict> {
    let leave = () => {};
    const ack = new Promise<Verdict | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.#acks.delete(claim);
        resolve(undefined);
      }, this.#options.ackTimeoutMs);
      this.#acks.set(claim, (verdict) => {
        clearTimeout(timer);
        this.#acks.delete(claim);
        resolve(verdict);
      });
      // The claimer hangs up before the answer: abandon at once (the waiter is then told
      // `lost` and waits on), unless the waiter's confirm came first.
      leave = () => {
        clearTimeout(timer);
        this.#acks.delete(claim);
        resolve(undefined);
      };
    });
    signal?.addEventListener("abort", leave, { once: true });
    if (signal?.aborted) {
      // Gone while its claim was made: no wake-up, the claim is abandoned at once.
      leave();
    } else {
      const wake: Wake = { type: "wake", id, waiter, claim, replyTo: this.#instance };
      try {
        await this.#command(() =>
          this.#redis.publish(this.#channel(instance), JSON.stringify(wake))
        );
      } catch (error) {
        // Certainly not published: nobody will answer; settle the claim in Redis now.
        if (error instanceof NotSent) this.#acks.get(claim)?.("abandoned");
      }
    }
    const answer = await ack;
    signal?.removeEventListener("abort", leave);
    if (answer === "closing" || this.#closing) return "closing";
    if (answer === "delivered" || answer === "gone") return answer;
    const verdict = await this.#abandon(id, claim, this.#options.ackTimeoutMs);
    if (verdict === "abandoned" && answer === undefined && !signal?.aborted) {
      log.warn("No answer from instance {instance} for a claim; starting over", { instance });
    }
    return verdict;
  }

  /**
   * Runs `abandon` for a claim, retrying for up to `retryMs` while Redis does not answer.
   * Resolves the verdict, or "unknown" (the claim is then kept for the next reconciliation).
   */
  async #abandon(id: string, claim: string, retryMs: number): Promise<Verdict> {
    const until = performance.now() + retryMs;
    for (;;) {
      try {
        const verdict = await this.#command(async () =>
          replyOf(
            AbandonReply,
            "abandon",
            await this.#redis.abandon(
              this.#key(id),
              this.#ackKey(claim),
              claim,
              ACK_TTL_MS,
              this.#channel(""),
              id,
            ),
          )
        );
        this.#pendingAbandons.delete(claim);
        return verdict;
      } catch {
        if (this.#closing || performance.now() >= until) {
          this.#pendingAbandons.set(claim, id);
          this.#scheduleRetry();
          return "unknown";
        }
        await delay(RETRY_MS);
      }
    }
  }

  /** Notes a party under `token` (in the ledger already) before Redis is asked. */
  #note(token: string, arrival: Arrival, bytes: number): Party {
    const since = performance.now();
    const result = Promise.withResolvers<Outcome>();
    const party: Party = {
      token,
      arrival,
      bytes,
      since,
      deadline: since + arrival.timeoutMs,
      held: false,
      registered: true,
      settled: false,
      chain: Promise.resolve(),
      busy: 0,
      promise: result.promise,
      resolve: result.resolve,
    };
    this.#parties.set(token, party);
    return party;
  }

  /** Answers `party` (once): frees its place and stops its timer and listener. */
  #settle(party: Party, outcome: Outcome): boolean {
    if (party.settled) return false;
    party.settled = true;
    this.#parties.delete(party.token);
    this.#ledger.release(party.arrival.address, party.bytes);
    party.cancelTimer?.();
    if (party.onAbort) party.arrival.signal?.removeEventListener("abort", party.onAbort);
    party.resolve(outcome);
    return true;
  }

  /** Forgets a party that was never held (it became a claimer, or Redis failed). */
  #drop(party: Party): void {
    this.#settle(party, { kind: "refused", reason: "conflict", waitedMs: 0 });
  }

  /** Arms the party's timer and hang-up listener; resolves with its outcome. */
  #hold(party: Party): Promise<Outcome> {
    // Paired already: the wake-up beat Redis's "registered" reply.
    if (party.settled) return party.promise;
    party.held = true;
    party.cancelTimer = setLongTimeout(
      () => this.#leave(party, "timeout"),
      Math.max(0, party.deadline - performance.now()),
    );
    party.onAbort = () => this.#leave(party, "departed");
    const signal = party.arrival.signal;
    if (signal?.aborted) party.onAbort();
    else signal?.addEventListener("abort", party.onAbort, { once: true });
    return party.promise;
  }

  /**
   * The party times out or hangs up. While Redis work for it runs (a claim being confirmed),
   * it waits for that work: the claim may be delivering to it.
   */
  #leave(party: Party, why: "timeout" | "departed"): void {
    if (party.settled) return;
    if (party.busy > 0) {
      if (party.deferred !== "departed") party.deferred = why;
      return;
    }
    const waitedMs = performance.now() - party.since;
    if (why === "departed") {
      this.#events.departed?.();
      this.#settle(party, { kind: "departed", waitedMs });
    } else if (!this.#connected || !party.registered) {
      // Not findable all along (Redis away, or its key lost and not written again yet).
      this.#settle(party, { kind: "refused", reason: "backend_unavailable", waitedMs });
    } else {
      this.#events.timedOut?.();
      this.#settle(party, { kind: "refused", reason: "timeout", waitedMs });
    }
    // Only if still waiting under our token: a claim in flight finds the key gone-or-ours
    // and is answered "gone" by #answerClaim.
    this.#command(() => this.#redis.deleteIf(this.#key(party.arrival.id), "token", party.token))
      .catch(() => 0);
  }

  /** Queues Redis work for `party` behind its earlier work. */
  #enqueue(party: Party, work: () => Promise<void>): Promise<void> {
    const run = async () => {
      party.busy++;
      try {
        await work();
      } catch (error) {
        log.warn("Redis work for a waiting party failed: {error}", { error });
      } finally {
        party.busy--;
        if (party.busy === 0 && party.deferred && !party.settled) {
          this.#leave(party, party.deferred);
        }
      }
    };
    party.chain = party.chain.then(run);
    return party.chain;
  }

  #onMessage(text: string): void {
    const parsed = parseMessage(text);
    if ("problem" in parsed) {
      // Not from a syncpoint instance of this version: nothing to act on.
      log.warn("Ignored a malformed message on this instance's channel ({problem}): {text}", {
        problem: parsed.problem,
        text: text.slice(0, 120),
      });
      return;
    }
    const { message } = parsed;
    if (message.type === "ack") {
      this.#acks.get(message.claim)?.(message.delivered ? "delivered" : "gone");
    } else if (message.type === "wake") {
      const party = this.#parties.get(message.waiter);
      const { id, waiter, claim, replyTo } = message;
      const answer = () => this.#answerClaim(party, id, waiter, claim, replyTo);
      if (party) this.#enqueue(party, answer);
      else answer().catch((error) => log.warn("Wake-up failed: {error}", { error }));
    } else if (message.type === "lost") {
      const party = this.#parties.get(message.waiter);
      if (party?.held && !party.settled) {
        party.registered = false;
        this.#enqueue(party, () => this.#register(party));
      }
    }
  }

  /**
   * Answers a claim on `waiter`'s key: `confirm` delivered (and settles the party as paired)
   * if the party is still here (and present, when in doubt), else `confirm` gone. If the
   * claim was abandoned meanwhile, the party registers again.
   */
  async #answerClaim(
    party: Party | undefined,
    id: string,
    waiter: string,
    claim: string,
    claimer: string,
  ): Promise<void> {
    const presence = party?.arrival.presence;
    if (party && !party.settled && presence?.inDoubt && !(await presence.confirm())) {
      // Left without our noticing (its signal has aborted too, and waits for us).
      if (!party.settled) {
        this.#events.departed?.();
        this.#settle(party, { kind: "departed", waitedMs: performance.now() - party.since });
      }
    }
    if (!party || party.settled) {
      // Gone (answered, timed out, or departed): the claimer starts over. Best effort: if it
      // fails, the claimer's `abandon` settles the claim.
      await this.#confirm(id, waiter, claim, claimer, "gone").catch(() => undefined);
      return;
    }
    let uncertain = false;
    for (;;) {
      let reply: ConfirmReply;
      try {
        reply = await this.#confirm(id, waiter, claim, claimer, "delivered");
      } catch (error) {
        if (!(error instanceof NotSent)) uncertain = true;
        if (this.#closing || performance.now() >= party.deadline) {
          this.#settle(party, unavailable(party));
          return;
        }
        await delay(RETRY_MS);
        continue;
      }
      const confirmed = this.#confirmed(reply, claim);
      if ("peerPayload" in confirmed) {
        const waitedMs = performance.now() - party.since;
        const { peerPayload } = confirmed;
        if (this.#settle(party, { kind: "paired", role: "first", waitedMs, peerPayload })) {
          this.#events.paired?.(waitedMs);
        }
        return;
      }
      // Stale, with the recorded verdict, if any.
      const { verdict } = confirmed;
      if (verdict === "delivered" || (uncertain && verdict !== "abandoned")) {
        // Our earlier confirm may have delivered (or did) but its reply, with the claimer's
        // payload, was lost: never pair this party with anyone else.
        log.warn(
          "Lost the confirmation of a pair (its reply and the kept payload); answering its " +
            "first party 503",
        );
        this.#settle(party, unavailable(party));
        return;
      }
      // Abandoned (the ack came too late) or the claim expired: wait again, registered anew.
      party.registered = false;
      await this.#register(party);
      return;
    }
  }

  /**
   * What a `confirm` reply says: the claimer's payload when it delivered (now, or earlier
   * with its reply lost and the payload kept for this), else the claim's recorded verdict
   * ("" when none).
   */
  #confirmed(
    reply: ConfirmReply,
    claim: string,
  ): { peerPayload: string | null } | { verdict: "" | "delivered" | "gone" | "abandoned" } {
    if (reply[0] === "ok") {
      const [, payload, has] = reply;
      if (payload.length > KEPT_DELETE_ABOVE) {
        // Kept for nothing: free a large payload now rather than at its TTL.
        this.#command(() => this.#redis.unlink(this.#keptKey(claim))).catch(() => 0);
      }
      return { peerPayload: has === "1" ? payload : null };
    }
    const [, verdict, kept] = reply;
    if (verdict === "delivered" && kept) {
      // Our earlier confirm delivered, its reply was lost: the payload was kept for this.
      log.info("Recovered the confirmation of a pair whose reply was lost");
      return { peerPayload: kept[0] === "1" ? kept.slice(1) : null };
    }
    return { verdict };
  }

  /** Runs `confirm` for a claim made by instance `claimer` (where the ack goes). */
  #confirm(
    id: string,
    waiter: string,
    claim: string,
    claimer: string,
    verdict: "delivered" | "gone",
  ): Promise<ConfirmReply> {
    const ack: Ack = { type: "ack", claim, delivered: verdict === "delivered" };
    return this.#command(async () =>
      replyOf(
        ConfirmReply,
        "confirm",
        await this.#redis.confirm(
          this.#key(id),
          this.#ackKey(claim),
          this.#keptKey(claim),
          waiter,
          claim,
          verdict,
          ACK_TTL_MS,
          this.#channel(claimer),
          JSON.stringify(ack),
          this.#keptMs,
        ),
      )
    );
  }

  /**
   * Registers a held party again (after an outage, or after its claim was abandoned):
   * written anew, or confirms a claim on it, or claims the party waiting on its id. On a
   * Redis failure it stays unregistered until the next reconciliation.
   */
  async #register(party: Party): Promise<void> {
    const { id, payload } = party.arrival;
    while (!party.settled && !party.deferred && !this.#closing) {
      const claim = crypto.randomUUID();
      let reply: RegisterReply;
      try {
        reply = await this.#registerOrClaim(
          id,
          party.token,
          payload,
          party.deadline - performance.now() + 5_000,
          claim,
        );
      } catch (error) {
        party.registered = false;
        if (!(error instanceof NotSent)) {
          this.#abandon(id, claim, this.#options.ackTimeoutMs).catch(() => {});
        }
        this.#scheduleRetry(); // or the next "ready", if Redis is away
        return;
      }
      switch (reply[0]) {
        case "registered":
          party.registered = true;
          return;
        case "pending": {
          // Claimed while we were away: its wake may be lost; answer it now.
          party.registered = true;
          const [, pending, claimer] = reply;
          await this.#answerClaim(party, id, party.token, pending, claimer);
          return;
        }
        case "claimed": {
          // Another party waits on this id: pair with it, this party as the second.
          party.registered = false;
          const [, waiter, instance, storedPayload, has] = reply;
          const verdict = await this.#claim(id, claim, waiter, instance, party.arrival.signal);
          if (verdict === "delivered") {
            const waitedMs = performance.now() - party.since;
            this.#settle(party, {
              kind: "paired",
              role: "second",
              waitedMs,
              peerPayload: has === "1" ? storedPayload : null,
            });
            return;
          }
          if (verdict === "unknown") {
            this.#settle(party, unavailable(party));
            return;
          }
          continue; // gone or abandoned: register again
        }
        default:
          // Another pair is being completed on this id: try again shortly.
          party.registered = false;
          this.#scheduleRetry();
          return;
      }
    }
  }

  #onConnectionLost(): void {
    if (this.#closing) return;
    this.#recovering = true;
    if (this.#redis.status !== "ready") this.#window.flush("Redis commands connection lost");
    // A party may have lost its key (restart) or a wake (subscriber cut).
    for (const party of this.#parties.values()) party.registered = false;
  }

  /** Reconciles again shortly (a re-registration or an abandon failed while connected). */
  #scheduleRetry(): void {
    if (this.#retryTimer !== undefined || this.#closing) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#connected) this.#scheduleReconcile();
    }, this.#options.ackTimeoutMs / 4);
  }

  /** Reconciles once both connections are ready (again), once at a time. */
  #scheduleReconcile(): void {
    if (this.#closing) return;
    this.#reconcileDue = true;
    if (this.#reconciling) return;
    this.#reconciling = true;
    (async () => {
      try {
        while (this.#reconcileDue && this.#connected && !this.#closing) {
          this.#reconcileDue = false;
          await this.#reconcile();
        }
      } finally {
        this.#reconciling = false;
      }
    })().catch((error) => log.warn("Reconciliation failed: {error}", { error }));
  }

  /**
   * Settles the claims left open, then registers every held party again. Logs once, at
   * info, after a connection was lost.
   */
  async #reconcile(): Promise<void> {
    try {
      // Active only once this resolves (ioredis re-subscribes on its own, but without a reply
      // to wait for): wakes published after it reach us.
      await this.#subscriber.subscribe(this.#channel(this.#instance));
    } catch {
      this.#reconcileDue = true; // the subscriber's next "ready" runs it
      return;
    }
    const claims = [...this.#pendingAbandons];
    await Promise.all(claims.map(async ([claim, id]) => {
      const verdict = await this.#abandon(id, claim, 0);
      if (verdict === "delivered") {
        log.warn("A claim answered 503 was delivered to its first party");
      }
    }));
    const parties = [...this.#parties.values()].filter((party) =>
      party.held && !party.settled && !party.registered
    );
    await Promise.all(parties.map((party) => this.#enqueue(party, () => this.#register(party))));
    if (this.#pendingAbandons.size > 0) this.#scheduleRetry();
    if (this.#recovering) {
      this.#recovering = false;
      const registered = parties.filter((party) => party.registered || party.settled).length;
      log.info(
        "Reconciled with Redis: {registered} of {held} waiting parties registered again; " +
          "{claims} open claims settled",
        { registered, held: parties.length, claims: claims.length },
      );
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearTimeout(this.#retryTimer);
    this.#window.flush("shutting down");
    const parties = [...this.#parties.values()];
    // Keys first, so that a party retrying elsewhere does not find its own old key; then
    // the answers. Deletes go out in pipelines of CLOSE_BATCH (one command per write took
    // ~0.24 ms each: 3.9 s for a full instance). A claim answered meanwhile still pairs.
    for (let i = 0; i < parties.length; i += CLOSE_BATCH) {
      const pipeline = this.#redis.pipeline() as ReturnType<Redis["pipeline"]> & {
        deleteIf(key: string, field: string, value: string): unknown;
      };
      for (const party of parties.slice(i, i + CLOSE_BATCH)) {
        pipeline.deleteIf(this.#key(party.arrival.id), "token", party.token);
      }
      await this.#command(() => pipeline.exec()).catch(() => undefined);
    }
    for (const party of parties) {
      this.#settle(party, {
        kind: "refused",
        reason: "shutting_down",
        waitedMs: performance.now() - party.since,
      });
    }
    for (const resolve of this.#acks.values()) resolve("closing");
    this.#redis.disconnect();
    this.#subscriber.disconnect();
  }
}

/** Deletes in flight at once when an instance closes. */
const CLOSE_BATCH = 512;

/**
 * Warns that Redis commands time out while connected (Redis slow, or this process starved):
 * the first at once, then at most one line a minute with the count since the last line.
 */
class TimeoutWarnings {
  #count = 0;
  #last = -Infinity;

  note(): void {
    this.#count++;
    const now = performance.now();
    if (now - this.#last < 60_000) return;
    log.warn(
      "Redis commands are timing out ({count} since the last warning): the parties concerned " +
        "get 503 backend_unavailable; check Redis's latency and this instance's CPU",
      { count: this.#count },
    );
    this.#last = now;
    this.#count = 0;
  }
}

function refused(reason: Refusal, started: number): Outcome {
  return { kind: "refused", reason, waitedMs: performance.now() - started };
}

function unavailable(party: Party): Outcome {
  return {
    kind: "refused",
    reason: "backend_unavailable",
    waitedMs: performance.now() - party.since,
  };
}
