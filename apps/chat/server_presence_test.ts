// Presence across instances, decided by server_presence.ts without I/O: the book alone, then
// two instances over a model of the database (rows, sessions, the channel) under generated
// interleavings of connects, disconnects, replacements, instance deaths and restarts,
// session losses, listener gaps, failed and late writes and reads. Once every announcement is
// delivered and read, each connection was last told the truth.
import assert from "node:assert/strict";
import fc from "fast-check";
import { PresenceBook, type PresenceEffect, type Told } from "./server_presence.ts";

type Tell = Extract<PresenceEffect<string>, { type: "tell" }>;
const tells = (effects: PresenceEffect<string>[]) =>
  effects.filter((e): e is Tell => e.type === "tell").map((e) => [e.connection, e.name, e.present]);
const only = <T extends PresenceEffect<string>["type"]>(
  effects: PresenceEffect<string>[],
  type: T,
) => effects.filter((e): e is Extract<PresenceEffect<string>, { type: T }> => e.type === type);

Deno.test("presence book: a newcomer is told nothing until the room is read; local peers are told at once", () => {
  const book = new PresenceBook<string>();
  const first = book.arrive("a1", "tea", "alice");
  assert.deepEqual(tells(first), [], "nothing is claimed before the read");
  const [read] = only(first, "read");
  assert.deepEqual(only(first, "write"), [{
    type: "write",
    rows: [{ room: "tea", name: "alice", present: true }],
    announce: false,
  }]);
  assert.deepEqual(tells(book.read("tea", read!.token, [])), [["a1", null, false]]);
  // Bob on this instance: both know at once, whatever other instances hold.
  const bob = book.arrive("b1", "tea", "bob");
  assert.deepEqual(tells(bob), [["a1", "bob", true], ["b1", "alice", true]]);
  assert.deepEqual(only(bob, "read"), [], "the room is known already");
  assert.deepEqual(only(bob, "write"), [], "one write at a time");
  assert.deepEqual(only(book.written(), "write"), [{
    type: "write",
    rows: [{ room: "tea", name: "bob", present: true }],
    announce: false,
  }]);
  // A second connection of bob's (a replacement) and the first ending: no flicker.
  assert.deepEqual(tells(book.arrive("b2", "tea", "bob")), [["b2", "alice", true]]);
  assert.deepEqual(tells(book.leave("b1")), []);
  const left = book.leave("b2");
  assert.deepEqual(tells(left), [["a1", "bob", false]]);
  assert.deepEqual(book.told("a1"), { name: "bob", present: false });
});

Deno.test("presence book: other instances' names count once read; a change announced during a read discards its answer", () => {
  const book = new PresenceBook<string>();
  const [read] = only(book.arrive("a1", "tea", "alice"), "read");
  // Alice's own name on another instance is not her peer.
  assert.deepEqual(tells(book.read("tea", read!.token, ["alice"])), [["a1", null, false]]);
  const [again] = only(book.changed("tea"), "read");
  assert.deepEqual(book.changed("tea"), [], "one read at a time");
  // The answer may predate the second change: read once more, say nothing yet.
  const [third] = only(book.read("tea", again!.token, ["bob"]), "read");
  assert.ok(third, "read again");
  assert.deepEqual(tells(book.read("tea", third!.token, ["alice", "bob"])), [["a1", "bob", true]]);
  // A stale token (a read for an earlier stay in the room) is ignored.
  assert.deepEqual(book.read("tea", read!.token, []), []);
});

Deno.test("presence book: a failed read claims nothing and is retried at the tick; a failed write is retried at the tick", () => {
  const book = new PresenceBook<string>();
  const effects = book.arrive("a1", "tea", "alice");
  const [read] = only(effects, "read");
  assert.deepEqual(book.readFailed("tea", read!.token), []);
  assert.equal(book.told("a1"), undefined, "nothing claimed");
  assert.deepEqual(book.writeFailed(), [], "not retried at once");
  assert.deepEqual(tells(book.leave("a1")), []);
  const tick = book.tick();
  assert.deepEqual(only(tick, "write"), [{
    type: "write",
    rows: [{ room: "tea", name: "alice", present: false }],
    announce: false,
  }], "the row may have been written: deleted to be sure");
  assert.deepEqual(only(tick, "read"), [], "nobody left in the room to read it for");
});

Deno.test("presence book: a renewed session writes every row again and announces them; a listener gap reads every room again", () => {
  const book = new PresenceBook<string>();
  const [read] = only(book.arrive("a1", "tea", "alice"), "read");
  book.read("tea", read!.token, ["bob"]);
  assert.deepEqual(book.told("a1"), { name: "bob", present: true });
  assert.deepEqual(book.written(), []);
  assert.deepEqual(only(book.resync(), "write"), [{
    type: "write",
    rows: [{ room: "tea", name: "alice", present: true }],
    announce: true,
  }]);
  assert.deepEqual(book.written(), []);
  const [reread] = only(book.stale(), "read");
  assert.deepEqual(book.changed("tea"), [], "a read is in flight");
  const [last] = only(book.read("tea", reread!.token, []), "read");
  assert.deepEqual(tells(book.read("tea", last!.token, [])), [["a1", "bob", false]]);
});

// The model: two instance slots on one database. An instance that dies is replaced by a new
// one (a new name) in its slot.

interface Conn {
  id: string;
  room: string;
  name: string;
}

interface Instance {
  id: string;
  book: PresenceBook<Conn>;
  conns: Conn[];
  /** Connections replaced by a newer one of their name, not yet ended. */
  leaving: Conn[];
  /** Its session is open (a lost one is reopened at its next tick). */
  session: boolean;
  /** Its session stood since its previous tick: it may reap. */
  steady: boolean;
  write?: { rows: { room: string; name: string; present: boolean }[]; announce: boolean };
  reads: { room: string; token: number; names: string[] }[];
  /** Announcements not delivered yet, in commit order. */
  inbox: { room: string; instance: string }[];
  told: Map<Conn, Told>;
}

const ROOMS = ["r", "s"];
const NAMES = ["alice", "bob"];

class World {
  rows = new Set<string>(); // JSON [room, name, instance]
  sessions = new Set<string>();
  slots: Instance[] = [];
  #made = 0;

  constructor() {
    this.slots = [this.#start(), this.#start()];
  }

  #start(): Instance {
    const instance: Instance = {
      id: `i${this.#made++}`,
      book: new PresenceBook<Conn>(),
      conns: [],
      leaving: [],
      session: true,
      steady: false,
      reads: [],
      inbox: [],
      told: new Map(),
    };
    this.sessions.add(instance.id);
    return instance;
  }

  #announce(room: string, instance: string): void {
    for (const slot of this.slots) slot.inbox.push({ room, instance });
  }

  #live(instance: string): boolean {
    return this.sessions.has(instance);
  }

  perform(slot: Instance, effects: PresenceEffect<Conn>[]): void {
    for (const effect of effects) {
      if (effect.type === "tell") {
        assert.ok(
          slot.conns.includes(effect.connection) || slot.leaving.includes(effect.connection),
        );
        assert.notEqual(effect.name, effect.connection.name, "never told of itself");
        slot.told.set(effect.connection, { name: effect.name, present: effect.present });
      } else if (effect.type === "write") {
        assert.equal(slot.write, undefined, "one write at a time");
        slot.write = { rows: effect.rows, announce: effect.announce };
      } else {
        // The read's snapshot is taken at once: the earliest it could be.
        const names = new Set<string>();
        for (const row of this.rows) {
          const [room, name, instance] = JSON.parse(row);
          if (room === effect.room && instance !== slot.id && this.#live(instance)) names.add(name);
        }
        slot.reads.push({ room: effect.room, token: effect.token, names: [...names] });
      }
    }
  }

  connect(s: number, room: string, name: string, replace: boolean): void {
    const slot = this.slots[s]!;
    const conn = { id: `${slot.id}/${this.#made++}`, room, name };
    const old = slot.conns.find((c) => c.room === room && c.name === name);
    slot.conns.push(conn);
    this.perform(slot, slot.book.arrive(conn, room, name));
    if (replace && old) {
      slot.conns = slot.conns.filter((c) => c !== old);
      slot.leaving.push(old);
    }
  }

  leave(slot: Instance, conn: Conn): void {
    slot.conns = slot.conns.filter((c) => c !== conn);
    slot.leaving = slot.leaving.filter((c) => c !== conn);
    slot.told.delete(conn);
    this.perform(slot, slot.book.leave(conn));
  }

  disconnect(s: number, k: number): void {
    const slot = this.slots[s]!;
    const all = [...slot.conns, ...slot.leaving];
    if (all.length) this.leave(slot, all[k % all.length]!);
  }

  /** The slot's instance is killed; a new one takes the slot. A write in flight may commit. */
  die(s: number, committed: boolean): void {
    const slot = this.slots[s]!;
    if (slot.write && committed) this.#commit(slot);
    this.sessions.delete(slot.id);
    this.slots[s] = this.#start();
    this.perform(this.slots[s]!, this.slots[s]!.book.resync());
  }

  #commit(slot: Instance): void {
    const changed = new Set<string>();
    for (const row of slot.write!.rows) {
      const key = JSON.stringify([row.room, row.name, slot.id]);
      if (row.present !== this.rows.has(key)) changed.add(row.room);
      if (row.present) this.rows.add(key);
      else this.rows.delete(key);
      if (row.present && slot.write!.announce) changed.add(row.room);
    }
    for (const room of changed) this.#announce(room, slot.id);
  }

  endWrite(s: number, ok: boolean, committed: boolean): void {
    const slot = this.slots[s]!;
    if (!slot.write) return;
    if (ok || committed) this.#commit(slot);
    slot.write = undefined;
    this.perform(slot, ok ? slot.book.written() : slot.book.writeFailed());
  }

  endRead(s: number, k: number, ok: boolean): void {
    const slot = this.slots[s]!;
    if (!slot.reads.length) return;
    const [read] = slot.reads.splice(k % slot.reads.length, 1);
    this.perform(
      slot,
      ok
        ? slot.book.read(read!.room, read!.token, read!.names)
        : slot.book.readFailed(read!.room, read!.token),
    );
  }

  deliver(s: number): void {
    const slot = this.slots[s]!;
    const event = slot.inbox.shift();
    if (event && event.instance !== slot.id) this.perform(slot, slot.book.changed(event.room));
  }

  /** The session is lost (the database restarted, the network failed) until the next tick. */
  loseSession(s: number): void {
    const slot = this.slots[s]!;
    this.sessions.delete(slot.id);
    slot.session = false;
  }

  /** The listener was away: announcements in that time are lost. */
  gap(s: number): void {
    const slot = this.slots[s]!;
    slot.inbox = [];
    this.perform(slot, slot.book.stale());
  }

  /** The periodic check (server_rooms.ts, #check). */
  tick(s: number): void {
    const slot = this.slots[s]!;
    const renewed = !slot.session;
    if (renewed) {
      slot.session = true;
      this.sessions.add(slot.id);
      this.perform(slot, slot.book.resync());
    }
    if (slot.steady && !renewed) this.#reap();
    slot.steady = !renewed;
    this.perform(slot, slot.book.tick());
  }

  #reap(): void {
    const gone = new Set<string>();
    for (const row of [...this.rows]) {
      const [room, , instance] = JSON.parse(row);
      if (this.#live(instance)) continue;
      this.rows.delete(row);
      gone.add(JSON.stringify([room, instance]));
    }
    for (const pair of gone) {
      const [room, instance] = JSON.parse(pair);
      this.#announce(room, instance);
    }
  }

  /** Everything in flight done, every announcement delivered and read, every retry made. */
  settle(): void {
    for (let round = 0; round < 50; round++) {
      for (const slot of this.slots) for (const conn of [...slot.leaving]) this.leave(slot, conn);
      let busy = false;
      for (const [s, slot] of this.slots.entries()) {
        while (slot.write || slot.reads.length || slot.inbox.length) {
          busy = true;
          this.endWrite(s, true, true);
          while (slot.reads.length) this.endRead(s, 0, true);
          while (slot.inbox.length) this.deliver(s);
        }
      }
      for (const s of this.slots.keys()) this.tick(s);
      const pending = this.slots.some((slot) =>
        slot.write || slot.reads.length || slot.inbox.length
      );
      if (!busy && !pending && round > 2) return;
    }
    assert.fail("the world does not settle");
  }

  /** Each connection was last told its peer's presence as it is. */
  check(): void {
    for (const slot of this.slots) {
      for (const conn of slot.conns) {
        const peers = new Set(
          this.slots.flatMap((other) =>
            other.conns.filter((c) => c.room === conn.room && c.name !== conn.name).map((c) =>
              c.name
            )
          ),
        );
        const told = slot.told.get(conn);
        assert.ok(told, `${conn.id} (${conn.name} in ${conn.room}) was told something`);
        assert.deepEqual(told, slot.book.told(conn));
        if (peers.size) {
          assert.deepEqual(told, { name: [...peers][0], present: true }, `${conn.id}: peer here`);
        } else {
          assert.equal(told.present, false, `${conn.id} (${conn.name}): nobody is there`);
          assert.notEqual(told.name, conn.name);
        }
      }
    }
  }
}

const operation = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant("connect" as const),
      s: fc.nat(1),
      room: fc.constantFrom(...ROOMS),
      name: fc.constantFrom(...NAMES),
      replace: fc.boolean(),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({ op: fc.constant("disconnect" as const), s: fc.nat(1), k: fc.nat() }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ op: fc.constant("die" as const), s: fc.nat(1), ok: fc.boolean() }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("write" as const),
      s: fc.nat(1),
      ok: fc.boolean(),
      committed: fc.boolean(),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("read" as const),
      s: fc.nat(1),
      k: fc.nat(),
      ok: fc.boolean(),
    }),
    weight: 4,
  },
  { arbitrary: fc.record({ op: fc.constant("deliver" as const), s: fc.nat(1) }), weight: 5 },
  { arbitrary: fc.record({ op: fc.constant("lose_session" as const), s: fc.nat(1) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant("gap" as const), s: fc.nat(1) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant("tick" as const), s: fc.nat(1) }), weight: 2 },
);

Deno.test("presence across two instances: under any interleaving, once everything is delivered each connection was last told the truth", () => {
  fc.assert(
    fc.property(fc.array(operation, { maxLength: 120, size: "max" }), (operations) => {
      const world = new World();
      for (const o of operations) {
        switch (o.op) {
          case "connect":
            world.connect(o.s, o.room, o.name, o.replace);
            break;
          case "disconnect":
            world.disconnect(o.s, o.k);
            break;
          case "die":
            world.die(o.s, o.ok);
            break;
          case "write":
            world.endWrite(o.s, o.ok, o.committed);
            break;
          case "read":
            world.endRead(o.s, o.k, o.ok);
            break;
          case "deliver":
            world.deliver(o.s);
            break;
          case "lose_session":
            world.loseSession(o.s);
            break;
          case "gap":
            world.gap(o.s);
            break;
          case "tick":
            world.tick(o.s);
        }
      }
      world.settle();
      world.check();
    }),
    { numRuns: 1_000 },
  );
});
