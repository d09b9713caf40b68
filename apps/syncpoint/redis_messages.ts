/**
 * What syncpoint instances exchange through Redis, as zod schemas: the pub/sub messages
 * between instances (`wake`, `ack`, `lost`) and the replies of the Lua scripts, which carry
 * the stored wait records (see redis_rendezvous.ts for the protocol). Whatever comes from
 * Redis is checked here before it is acted on: another version of the service, or anyone
 * with access to Redis, could publish or store something else.
 *
 * @module
 */
import { z } from "zod";

/** A claimer asks the waiter's instance to confirm its claim on `waiter`'s key. */
const Wake = z.object({
  type: z.literal("wake"),
  id: z.string(),
  waiter: z.string(),
  claim: z.string(),
  /** The claimer's instance: where the ack goes. */
  replyTo: z.string(),
});

/** The waiter's instance answers a claim: delivered (paired) or gone. */
const Ack = z.object({ type: z.literal("ack"), claim: z.string(), delivered: z.boolean() });

/** A claim on `waiter` was abandoned and its key deleted: it registers again. */
const Lost = z.object({ type: z.literal("lost"), id: z.string(), waiter: z.string() });

/** A message on an instance's channel. */
export const Message = z.discriminatedUnion("type", [Wake, Ack, Lost]);
/** A message on an instance's channel. */
export type Message = z.infer<typeof Message>;
/** A `wake` message. */
export type Wake = z.infer<typeof Wake>;
/** An `ack` message. */
export type Ack = z.infer<typeof Ack>;

/** "0" or "1": whether a stored payload is one (an empty string stands for none). */
const Has = z.enum(["0", "1"]);

/** The reply of `register-or-claim` (see REGISTER_OR_CLAIM). */
export const RegisterReply = z.union([
  z.tuple([z.literal("registered")]),
  /** A waiting party was claimed: its token, instance, payload and whether it has one. */
  z.tuple([z.literal("claimed"), z.string(), z.string(), z.string(), Has]),
  /** This token's key is claimed: the claim and the claimer's instance. */
  z.tuple([z.literal("pending"), z.string(), z.string()]),
  z.tuple([z.literal("conflict")]),
]);
/** The reply of `register-or-claim`. */
export type RegisterReply = z.infer<typeof RegisterReply>;

/** The reply of `confirm` (see CONFIRM). */
export const ConfirmReply = z.union([
  /** The claim was current: the claimer's payload and whether it has one. */
  z.tuple([z.literal("ok"), z.string(), Has]),
  /** The recorded verdict, if any, and the kept payload: "0" or "1" then the payload, or "". */
  z.tuple([
    z.literal("stale"),
    z.enum(["", "delivered", "gone", "abandoned"]),
    z.string().regex(/^(?:[01][\s\S]*)?$/, "not a kept payload"),
  ]),
]);
/** The reply of `confirm`. */
export type ConfirmReply = z.infer<typeof ConfirmReply>;

/** The reply of `abandon`: the claim's verdict. */
export const AbandonReply = z.enum(["delivered", "gone", "abandoned"]);

/** A reply of a script that is none of the replies it can give: its outcome is unknown. */
export class MalformedReply extends Error {
  override name = "MalformedReply";
}

/**
 * `value` as `schema` says, or {@link MalformedReply} naming the script and the problem
 * in a few words.
 */
export function replyOf<T>(schema: z.ZodType<T>, script: string, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new MalformedReply(
    `Unexpected reply of the ${script} script (${problemOf(result.error)}): ${
      JSON.stringify(value)?.slice(0, 120)
    }`,
  );
}

/**
 * A message of an instance's channel, or what is wrong with it in a few words (never a
 * raw zod dump).
 */
export function parseMessage(text: string): { message: Message } | { problem: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { problem: "not JSON" };
  }
  const result = Message.safeParse(json);
  return result.success ? { message: result.data } : { problem: problemOf(result.error) };
}

/** The first issue zod found, as "claim: expected string". */
function problemOf(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return "malformed";
  const where = issue.path.length > 0 ? issue.path.join(".") : "the value";
  switch (issue.code) {
    case "invalid_type":
      return `${where}: expected ${issue.expected}`;
    case "invalid_value":
      return `${where}: expected ${issue.values.map((v) => JSON.stringify(v)).join(" or ")}`;
    case "invalid_union":
      return `${where}: none of the known shapes`;
    default:
      return `${where}: malformed`;
  }
}
