/**
 * The decision of the accept watchdog of http1.ts, apart from its sockets and timers: given
 * what one probe found and the watchdog's counters, whether accepting failed, when to look
 * again, and whether an outage is over. Pure, so that it is tested directly.
 *
 * @module
 */

/**
 * What one watchdog probe found: undefined when a connection was accepted in time (the
 * probe or any other), else why not: the probe connection could not be opened
 * ("unopened", this process is out of descriptors) or was not accepted ("unaccepted").
 */
export type AcceptProbe = { kind: "unopened" | "unaccepted"; reason: string } | undefined;

/** What the watchdog keeps from one check to the next. */
export interface WatchdogCounters {
  /** Probes in a row that connected but were not accepted. */
  unaccepted: number;
  /** When accepting was first seen working in the current outage (ms; 0: not yet). */
  healthySince: number;
}

/** What one check saw. */
export interface WatchdogSeen extends WatchdogCounters {
  /** What the probe found. */
  probe: AcceptProbe;
  /** Whether an outage is on. */
  outage: boolean;
  /** The clock, in ms. */
  now: number;
}

/** The watchdog's settings. */
export interface WatchdogSettings {
  /** Milliseconds between two checks. */
  watchdogMs: number;
  /** Milliseconds of accepting that end an outage. */
  recoveredAfterMs: number;
  /** Unaccepted probes in a row that are an accept failure. */
  unacceptedProbes: number;
}

/**
 * Milliseconds between checks at most while an outage may be ending (250 ms): its end is
 * seen soon after `recoveredAfterMs`.
 */
export const RECOVERY_CHECK_MS = 250;

/**
 * What the watchdog does after one check, with its counters for the next: "fail" (an accept
 * failure: replace the listener, and wait as the outage's backoff says), or "wait" `ms`
 * before the next check, the outage over first when `recovered`.
 */
export type WatchdogStep =
  & WatchdogCounters
  & ({ action: "fail"; reason: string } | { action: "wait"; ms: number; recovered: boolean });

/**
 * The watchdog's decision after one check.
 *
 * @param seen The counters, what the probe found, whether an outage is on, the clock.
 * @param settings The watchdog's timings and its limit of unaccepted probes.
 * @returns What to do next and the counters after this check.
 */
export function watchdogStep(seen: WatchdogSeen, settings: WatchdogSettings): WatchdogStep {
  const { probe, healthySince } = seen;
  // A probe that connected but was not accepted may only be queued behind a burst: only
  // `unacceptedProbes` (http1.ts: UNACCEPTED_PROBES) of them in a row, with nothing else
  // accepted meanwhile, stop the listener (replacing it refuses what waits in its backlog).
  // One that could not even be opened (this process is out of descriptors) is an outage at
  // once.
  const unaccepted = probe?.kind === "unaccepted" ? seen.unaccepted + 1 : 0;
  if (probe && (probe.kind === "unopened" || unaccepted >= settings.unacceptedProbes)) {
    return { action: "fail", reason: probe.reason, unaccepted: 0, healthySince: 0 };
  }
  if (probe || !seen.outage) {
    return { action: "wait", ms: settings.watchdogMs, recovered: false, unaccepted, healthySince };
  }
  const since = healthySince || seen.now;
  return {
    action: "wait",
    ms: Math.min(settings.watchdogMs, RECOVERY_CHECK_MS),
    recovered: seen.now - since >= settings.recoveredAfterMs,
    unaccepted,
    healthySince: since,
  };
}
