// Deployment files, checked without Docker or a cluster (neither runs here): manifests are
// validated against the Kubernetes schemas offline (kubernetes-models), and the command
// lines a container would run are run with `deno run` and must serve. kubernetes-models
// rejects wrong types and missing required fields but not unknown (misspelled) fields, so
// the fields that matter are also asserted one by one.
import { bytesToHex } from "@noble/hashes/utils.js";
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Service } from "kubernetes-models/v1/Service";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { IContainer } from "kubernetes-models/v1/Container";
import {
  findPostgres,
  freePort,
  PrivateRedis,
  run,
  testSchema,
  testWith,
  waitFor,
} from "@duet/testkit";
import { generateCertificateAuthority } from "@duet/webtransport";
import { PROTOCOL_VERSION } from "@duet/chat";

const root = new URL("../", import.meta.url);
const postgres = await findPostgres();

// deno-lint-ignore no-explicit-any
const models: Record<string, new (data: any) => { validate(): void }> = {
  "apps/v1/Deployment": Deployment,
  "v1/Service": Service,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
};

async function manifests(path: string): Promise<Record<string, unknown>[]> {
  const documents = parseAllDocuments(await Deno.readTextFile(new URL(path, root)));
  return documents.map((document) => {
    assert.deepEqual(document.errors, [], `${path}: YAML errors`);
    return document.toJS() as Record<string, unknown>;
  });
}

/** Validates each document against the schema of its kind; throws on the first mistake. */
function validateAll(documents: Record<string, unknown>[]): void {
  for (const document of documents) {
    const Model = models[`${document["apiVersion"]}/${document["kind"]}`];
    assert.ok(Model, `no schema for ${document["apiVersion"]}/${document["kind"]}`);
    new Model(document).validate();
  }
}

/** ENTRYPOINT and CMD of a Dockerfile (exec form). */
async function dockerCommand(path: string): Promise<{ entrypoint: string[]; cmd: string[] }> {
  const text = await Deno.readTextFile(new URL(path, root));
  const exec = (instruction: string) => {
    const line = text.match(new RegExp(`^${instruction} (\\[.*\\])$`, "m"))?.[1];
    assert.ok(line, `${path} has an exec-form ${instruction}`);
    return JSON.parse(line) as string[];
  };
  return { entrypoint: exec("ENTRYPOINT"), cmd: exec("CMD") };
}

/** The permission and unstable flags of the Dockerfile's `deno compile`. */
async function compileFlags(dockerfile: string): Promise<string[]> {
  const text = await Deno.readTextFile(new URL(dockerfile, root));
  const compile = text.replaceAll("\\\n", " ").match(/deno compile ([^\n]*)/)?.[1];
  assert.ok(compile, `${dockerfile} builds with deno compile`);
  return compile.split(/\s+/).filter((word) => /^--(allow|unstable)-[a-z-]+$/.test(word));
}

/**
 * Runs the duet binary's arguments the way the image built from `dockerfile` would, but
 * through `deno run` with the flags of its `deno compile`; port 0 instead of the image's.
 * Resolves with the address from the "listening" log line (JSON logs: a `url` property, or
 * `host` and `port`), the port, and a function that stops the process and returns its
 * exit status (0 expected) and its log.
 */
async function runLikeContainer(
  dockerfile: string,
  args: string[],
  env: Record<string, string> = {},
) {
  const portAt = args.indexOf("--port");
  const local = args.map((arg, i) => (i === portAt + 1 ? "0" : arg));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...await compileFlags(dockerfile),
      new URL("apps/cli/main.ts", root).pathname,
      ...local,
    ],
    env,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const reading = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
  })();
  let url = "";
  await waitFor(
    () => {
      const line = log.split("\n").find((l) => l.includes('"url"') || l.includes('"port"'));
      const properties = line ? JSON.parse(line).properties : undefined;
      url = properties?.url ?? (properties ? `tcp://${properties.host}:${properties.port}` : "");
      return url !== "";
    },
    "the listening log line",
    30_000,
  ).catch((error) => {
    throw new Error(`${error.message}: ${log}`);
  });
  const address = new URL(url.replace("0.0.0.0", "127.0.0.1"));
  return {
    url: address.href,
    port: Number(address.port),
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* it ended by itself: the status says how */ }
      const { code } = await child.status;
      await reading;
      return { code, log };
    },
  };
}

/** The syncpoint manifest's objects, by kind and name. */
function syncpointObjects(documents: Record<string, unknown>[]) {
  const find = <T>(kind: string, name: string) => {
    const found = documents.find((d) =>
      d["kind"] === kind && (d["metadata"] as { name: string }).name === name
    );
    assert.ok(found, `${kind} ${name}`);
    return found as unknown as T;
  };
  const syncpoint = find<Deployment>("Deployment", "syncpoint");
  const redis = find<Deployment>("Deployment", "syncpoint-redis");
  return {
    syncpoint,
    service: syncpoint.spec!.template.spec!.containers[0]!,
    redis,
    redisContainer: redis.spec!.template.spec!.containers[0]!,
    pdb: find<PodDisruptionBudget>("PodDisruptionBudget", "syncpoint"),
    networkPolicy: find<NetworkPolicy>("NetworkPolicy", "syncpoint-redis"),
  };
}

/** The value after `flag` in `args`, which must be there. */
function argument(args: string[], flag: string): string {
  const at = args.indexOf(flag);
  assert.ok(at >= 0 && at + 1 < args.length, `${flag} is set explicitly`);
  return args[at + 1]!;
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** A Kubernetes memory quantity in bytes ("1280Mi", "1Gi", "512M"). */
function quantity(text: string | number | undefined): number {
  const match = String(text).match(/^(\d+)(Ki|Mi|Gi|k|M|G)?$/);
  assert.ok(match, `a memory quantity: ${text}`);
  const unit = { Ki: KiB, Mi: MiB, Gi: 1024 * MiB, k: 1e3, M: 1e6, G: 1e9 }[match[2] ?? ""] ?? 1;
  return Number(match[1]) * unit;
}

/** A Redis memory size in bytes (Redis's "mb" and "gb" are binary, "m" and "g" decimal). */
function redisBytes(text: string): number {
  const match = text.toLowerCase().match(/^(\d+)(kb|mb|gb|k|m|g)?$/);
  assert.ok(match, `a Redis memory size: ${text}`);
  const unit = { kb: KiB, mb: MiB, gb: 1024 * MiB, k: 1e3, m: 1e6, g: 1e9 }[match[2] ?? ""] ?? 1;
  return Number(match[1]) * unit;
}

/**
 * The memory model of docs/benchmarks.md ("Redis memory per waiting party, and sizing a
 * deployment"). Instance figures: "Memory per waiting party, by payload" and "Capacity"
 * (re-measure them with bench/syncpoint/memory.ts when the listener changes);
 * Redis figures: bench/syncpoint/redis_memory.ts.
 */
const MODEL = {
  instance: {
    // The listener of packages/net/http1.ts on Deno.listen, measured with
    // bench/syncpoint/memory.ts, medians of 3 (docs/benchmarks.md):
    idle: 87 * MiB, // RSS idle, warmed up (85.8-86.7 MiB)
    perParty: 19_200, // bytes per waiting party, empty body
    perPayloadByte: 3.0, // (215.9 KB - 19.2 KB) / 64 KiB: a held 64 KiB UTF-16 payload
    margin: 1.25, // the pod limit covers the worst case x this
  },
  redis: {
    perParty: 780, // used_memory per wait key, hashtable encoding, small payload
    perPayloadByte: 1.25, // jemalloc size classes: 64 KiB of payload takes 80 KiB
    buffers: 64 * MiB, // base, client query/output buffers, claims in flight
    rssOverUsed: 1.5, // container limit >= maxmemory x this (fragmentation, base RSS)
  },
  /**
   * The drain deletes an instance's keys in pipelines of 512 (CLOSE_BATCH in
   * apps/syncpoint/redis_rendezvous.ts): a round trip per pipeline (1 ms in a cluster) and
   * the work per key (34 us measured on loopback, 16,000 keys in 549 ms; 0.05 kept).
   */
  drainRoundTripMs: 1,
  drainPipeline: 512,
  drainPerPartyMs: 0.05,
};

/** Worst-case RSS of one instance holding `parties` and `payloadBytes` of payloads. */
const instanceWorstCase = (parties: number, payloadBytes: number) =>
  MODEL.instance.idle + parties * MODEL.instance.perParty +
  payloadBytes * MODEL.instance.perPayloadByte;

/** Worst-case Redis used_memory for one instance's waiting parties. */
const redisPerInstance = (parties: number, payloadBytes: number) =>
  parties * MODEL.redis.perParty + payloadBytes * MODEL.redis.perPayloadByte;

/**
 * Checks that the limits the manifest allows fit the memory it gives, by the model; throws
 * naming the first figure that does not.
 */
function checkSizing(documents: Record<string, unknown>[]): void {
  const { syncpoint, service, redis, redisContainer } = syncpointObjects(documents);
  const args = service.args!;
  const maxWaiting = Number(argument(args, "--max-waiting"));
  const maxWaitingBytes = Number(argument(args, "--max-waiting-bytes"));
  assert.ok(maxWaiting > 0 && maxWaitingBytes > 0, "both limits are set, neither unlimited");
  // The instance.
  const limit = quantity(service.resources?.limits?.["memory"]);
  const worst = instanceWorstCase(maxWaiting, maxWaitingBytes);
  assert.ok(
    limit >= worst * MODEL.instance.margin,
    `pod memory limit ${limit / MiB} MiB < ${MODEL.instance.margin} x the worst case of ` +
      `--max-waiting ${maxWaiting} --max-waiting-bytes ${maxWaitingBytes}: ` +
      `${(worst / MiB).toFixed(0)} MiB (docs/benchmarks.md)`,
  );
  assert.equal(
    quantity(service.resources?.requests?.["memory"]),
    limit,
    "syncpoint memory request = limit (the limits' worst case is reserved)",
  );
  // Redis: every instance whose keys can be there at once.
  const replicas = syncpoint.spec!.replicas!;
  const surge = syncpoint.spec!.strategy?.rollingUpdate?.maxSurge;
  assert.equal(typeof surge, "number", "maxSurge is a number of pods");
  const instances = replicas + (surge as number) + 1; // + one crashed instance's leftovers
  const redisArgs = redisContainer.args!;
  assert.equal(argument(redisArgs, "--maxmemory-policy"), "noeviction");
  const maxmemory = redisBytes(argument(redisArgs, "--maxmemory"));
  const needed = instances * redisPerInstance(maxWaiting, maxWaitingBytes) + MODEL.redis.buffers;
  assert.ok(
    maxmemory >= needed,
    `Redis maxmemory ${maxmemory / MiB} MiB < ${(needed / MiB).toFixed(0)} MiB for ` +
      `${instances} instances (${replicas} replicas + ${surge} surge + 1 crashed) of ` +
      `--max-waiting ${maxWaiting} --max-waiting-bytes ${maxWaitingBytes} (docs/benchmarks.md)`,
  );
  const redisLimit = quantity(redisContainer.resources?.limits?.["memory"]);
  assert.ok(
    redisLimit >= maxmemory * MODEL.redis.rssOverUsed,
    `Redis container limit ${redisLimit / MiB} MiB < ${MODEL.redis.rssOverUsed} x maxmemory`,
  );
  assert.equal(quantity(redisContainer.resources?.requests?.["memory"]), redisLimit);
  assert.equal(redis.spec?.replicas, 1, "one Redis: the rendezvous space is not sharded");
  // The drain: preStop, --drain-ms, then one Redis round trip per waiting party, then
  // claims in flight (2 s ack timeout + 1 s command timeout).
  const pod = syncpoint.spec!.template.spec!;
  const preStop = service.lifecycle?.preStop?.sleep?.seconds ?? 0;
  const drainMs = args.includes("--drain-ms") ? Number(argument(args, "--drain-ms")) : 0;
  const deletes = maxWaiting * MODEL.drainPerPartyMs +
    Math.ceil(maxWaiting / MODEL.drainPipeline) * MODEL.drainRoundTripMs;
  const drain = preStop + drainMs / 1000 + deletes / 1000 + 3;
  assert.ok(
    (pod.terminationGracePeriodSeconds ?? 30) >= drain,
    `terminationGracePeriodSeconds < ${drain} s, the drain of ${maxWaiting} parties`,
  );
}

/** The env entry `name` of a container. */
function envOf(container: IContainer, name: string) {
  const entry = container.env?.find((e) => e.name === name);
  assert.ok(entry, `${container.name} has ${name}`);
  return entry;
}

/** Kubernetes's $(NAME) expansion in args and env values. */
const expand = (text: string, variables: Record<string, string>) =>
  text.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name) => variables[name] ?? all);

Deno.test("deploy/syncpoint/k8s.yaml validates against the Kubernetes schemas", async () => {
  const documents = await manifests("deploy/syncpoint/k8s.yaml");
  const kinds = documents.map((d) => `${d["apiVersion"]}/${d["kind"]}`);
  assert.deepEqual(kinds.sort(), [
    "apps/v1/Deployment",
    "apps/v1/Deployment",
    "networking.k8s.io/v1/NetworkPolicy",
    "policy/v1/PodDisruptionBudget",
    "v1/Service",
    "v1/Service",
  ]);
  validateAll(documents);
  const { syncpoint, service: container } = syncpointObjects(documents);
  assert.equal(syncpoint.spec?.replicas, 2, "two replicas");
  assert.equal(container.readinessProbe?.httpGet?.path, "/healthz");
  assert.equal(container.livenessProbe?.tcpSocket?.port, "http");
  assert.deepEqual(container.ports?.map((p) => p.containerPort), [8080]);
});

Deno.test("deploy/syncpoint/k8s.yaml: Redis password from a Secret, probes, PDB, spreading", async () => {
  const documents = await manifests("deploy/syncpoint/k8s.yaml");
  const { syncpoint, service, redis, redisContainer, pdb, networkPolicy } = syncpointObjects(
    documents,
  );
  // One Secret key, read by both sides; the URL is built from it by Kubernetes's expansion,
  // which only sees variables defined earlier in the list.
  for (
    const [container, name] of [[service, "REDIS_PASSWORD"], [redisContainer, "REDIS_PASSWORD"], [
      redisContainer,
      "REDISCLI_AUTH",
    ]] as const
  ) {
    assert.deepEqual(envOf(container, name).valueFrom?.secretKeyRef, {
      name: "syncpoint-redis",
      key: "password",
    });
  }
  const names = service.env!.map((e) => e.name);
  assert.ok(names.indexOf("REDIS_PASSWORD") < names.indexOf("SYNCPOINT_REDIS_URL"));
  const url = new URL(
    expand(envOf(service, "SYNCPOINT_REDIS_URL").value!, { REDIS_PASSWORD: "p" }),
  );
  assert.equal(url.password, "p");
  assert.equal(`${url.hostname}:${url.port}`, "syncpoint-redis:6379");
  assert.ok(!service.args!.includes("--redis-url"), "--redis-url would override the env URL");
  assert.equal(argument(redisContainer.args!, "--requirepass"), "$(REDIS_PASSWORD)");
  assert.match(redisContainer.readinessProbe!.exec!.command!.join(" "), /grep -q PONG/);
  assert.equal(redis.spec?.strategy?.type, "Recreate", "never two Redis pods at once");
  // Probes: readiness follows /healthz (503 while draining or Redis is away); liveness must
  // not, or a Redis outage would restart every pod.
  assert.equal(service.readinessProbe?.httpGet?.path, "/healthz");
  assert.equal(service.livenessProbe?.httpGet, undefined);
  assert.ok(service.livenessProbe?.tcpSocket);
  assert.equal(service.lifecycle?.preStop?.sleep?.seconds, 5);
  assert.ok(Number(argument(service.args!, "--drain-ms")) > 0, "/healthz 503 before closing");
  // The PDB selects the Deployment's pods and leaves one disruption possible.
  const labels = syncpoint.spec!.template.metadata!.labels!;
  for (const [key, value] of Object.entries(pdb.spec!.selector!.matchLabels!)) {
    assert.equal(labels[key], value, `the PDB selects the syncpoint pods by ${key}`);
  }
  assert.ok((pdb.spec!.minAvailable as number) < syncpoint.spec!.replicas!);
  assert.equal(syncpoint.spec?.strategy?.rollingUpdate?.maxUnavailable, 0);
  // Spread: replicas on different nodes (required), zones (preferred).
  const spread = syncpoint.spec!.template.spec!.topologySpreadConstraints!;
  const byKey = Object.fromEntries(spread.map((c) => [c.topologyKey, c]));
  assert.equal(byKey["kubernetes.io/hostname"]?.whenUnsatisfiable, "DoNotSchedule");
  assert.equal(byKey["topology.kubernetes.io/zone"]?.whenUnsatisfiable, "ScheduleAnyway");
  for (const constraint of spread) {
    assert.deepEqual(constraint.labelSelector?.matchLabels, {
      "app.kubernetes.io/name": "syncpoint",
    });
  }
  // Only syncpoint pods reach Redis.
  assert.deepEqual(networkPolicy.spec?.podSelector?.matchLabels, redis.spec!.selector.matchLabels);
  assert.deepEqual(
    networkPolicy.spec?.ingress?.[0]?.from?.[0]?.podSelector?.matchLabels,
    syncpoint.spec!.selector.matchLabels,
  );
});

Deno.test("deploy/syncpoint/k8s.yaml: the memory limits cover the model's worst case", async () => {
  const documents = await manifests("deploy/syncpoint/k8s.yaml");
  checkSizing(documents);
});

Deno.test("the sizing check fails when the limits grow without resizing (the check can fail)", async () => {
  const changed = async (change: (objects: ReturnType<typeof syncpointObjects>) => void) => {
    const documents = await manifests("deploy/syncpoint/k8s.yaml");
    change(syncpointObjects(documents));
    return documents;
  };
  const setArg = (args: string[], flag: string, value: string) => {
    args[args.indexOf(flag) + 1] = value;
  };
  for (
    const change of [
      (o: ReturnType<typeof syncpointObjects>) => setArg(o.service.args!, "--max-waiting", "32000"),
      (o: ReturnType<typeof syncpointObjects>) =>
        setArg(o.service.args!, "--max-waiting-bytes", String(128 * MiB)),
      (o: ReturnType<typeof syncpointObjects>) => {
        o.service.args = o.service.args!.filter((a) => !a.startsWith("--max-waiting-bytes"));
      },
      (o: ReturnType<typeof syncpointObjects>) => {
        o.syncpoint.spec!.replicas = 4;
      },
      (o: ReturnType<typeof syncpointObjects>) =>
        setArg(o.redisContainer.args!, "--maxmemory-policy", "allkeys-lru"),
      (o: ReturnType<typeof syncpointObjects>) =>
        setArg(o.redisContainer.args!, "--maxmemory", "768mb"),
      (o: ReturnType<typeof syncpointObjects>) => setArg(o.service.args!, "--drain-ms", "20000"),
    ]
  ) {
    const documents = await changed(change);
    assert.throws(() => checkSizing(documents), assert.AssertionError, change.toString());
  }
});

testWith(await PrivateRedis.find(), {
  name: "the k8s Deployments' args and env, with a Redis started like the manifest's, pair parties",
  fn: async () => {
    const documents = await manifests("deploy/syncpoint/k8s.yaml");
    const { service, redisContainer } = syncpointObjects(documents);
    // Redis as the manifest starts it, with a password in the Secret's place.
    const password = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
    const port = freePort();
    const redisArgs = redisContainer.args!.map((arg) => expand(arg, { REDIS_PASSWORD: password }));
    const server = new Deno.Command(PrivateRedis.binary, {
      args: [...redisArgs, "--port", String(port), "--bind", "127.0.0.1"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor(
        () => Deno.connect({ port }).then((c) => (c.close(), true), () => false),
        "redis-server",
      );
      const cli = (...args: string[]) => run("redis-cli", ["-p", String(port), ...args]);
      assert.match((await cli("ping")).stdout, /NOAUTH/, "the password is required");
      assert.deepEqual(
        (await cli("-a", password, "--no-auth-warning", "config", "get", "maxmemory-policy"))
          .stdout.split("\n").slice(0, 2),
        ["maxmemory-policy", "noeviction"],
      );
      const url = expand(envOf(service, "SYNCPOINT_REDIS_URL").value!, { REDIS_PASSWORD: password })
        .replace("syncpoint-redis:6379", `127.0.0.1:${port}`);
      const instance = await runLikeContainer("deploy/syncpoint/Dockerfile", [
        ...service.args!,
        "--redis-prefix",
        `duet-test:${crypto.randomUUID()}`,
      ], { SYNCPOINT_REDIS_URL: url });
      try {
        await waitFor(async () => {
          const health = await fetch(new URL("/healthz", instance.url));
          await health.body?.cancel();
          return health.status === 200;
        }, "the service to reach Redis");
        const first = fetch(new URL("/wait-for-second-party/k8s", instance.url), {
          method: "POST",
          body: "a",
        });
        await waitFor(
          async () => (await (await fetch(new URL("/healthz", instance.url))).json()).waiting === 1,
          "the first party to wait",
        );
        const second = await fetch(new URL("/wait-for-second-party/k8s", instance.url), {
          method: "POST",
          body: "b",
        });
        assert.equal((await second.json()).peer_payload, "a");
        assert.equal((await (await first).json()).peer_payload, "b");
      } finally {
        const { code, log } = await instance.stop();
        assert.equal(code, 0, log);
      }
    } finally {
      server.kill("SIGKILL");
      await server.status;
    }
  },
});

Deno.test("deploy/ping/k8s.yaml validates: probes on TCP, UDP LoadBalancer with Local policy, TLS from a Secret, PDB", async () => {
  const documents = await manifests("deploy/ping/k8s.yaml");
  assert.deepEqual(documents.map((d) => `${d["apiVersion"]}/${d["kind"]}`).sort(), [
    "apps/v1/Deployment",
    "policy/v1/PodDisruptionBudget",
    "v1/Service",
    "v1/Service",
  ]);
  validateAll(documents);
  const deployment = documents.find((d) => d["kind"] === "Deployment") as unknown as Deployment;
  const pod = deployment.spec!.template.spec!;
  const container = pod.containers[0]!;
  assert.deepEqual(
    container.ports?.map((p) => [p.name, p.containerPort, p.protocol]),
    [["quic", 4433, "UDP"], ["https", 4433, "TCP"]],
  );
  assert.equal(container.readinessProbe?.httpGet?.port, "https");
  assert.equal(container.readinessProbe?.httpGet?.scheme, "HTTPS");
  assert.equal(container.livenessProbe?.tcpSocket?.port, "https");
  assert.equal(pod.volumes?.[0]?.secret?.secretName, "ping-tls");
  assert.equal(container.volumeMounts?.[0]?.mountPath, "/etc/duet-ping");
  const services = documents.filter((d) => d["kind"] === "Service") as unknown as Service[];
  const quic = services.find((s) => s.metadata?.name === "ping-quic")!;
  assert.equal(quic.spec?.type, "LoadBalancer");
  assert.equal(quic.spec?.externalTrafficPolicy, "Local");
  assert.deepEqual(quic.spec?.ports?.map((p) => [p.protocol, p.targetPort]), [["UDP", "quic"]]);
  const web = services.find((s) => s.metadata?.name === "ping-web")!;
  assert.deepEqual(web.spec?.ports?.map((p) => [p.protocol, p.targetPort]), [["TCP", "https"]]);
  const pdb = documents.find((d) =>
    d["kind"] === "PodDisruptionBudget"
  ) as unknown as PodDisruptionBudget;
  assert.equal(pdb.spec?.minAvailable, 1);
});

/** `duet ping` with two quick pings at a server started like a container on `port`. */
function pingTwice(port: number, ...trust: string[]) {
  return run(Deno.execPath(), [
    "run",
    "--allow-all",
    new URL("apps/cli/main.ts", root).pathname,
    "ping",
    "--url",
    `https://127.0.0.1:${port}/ping`,
    ...trust,
    "--count",
    "2",
    "--interval",
    "20",
  ]);
}

Deno.test("the ping image's ENTRYPOINT + CMD serves the page and pongs (generated certificate)", async () => {
  const { entrypoint, cmd } = await dockerCommand("deploy/ping/Dockerfile");
  assert.deepEqual(entrypoint, ["/duet"]);
  const service = await runLikeContainer("deploy/ping/Dockerfile", cmd);
  try {
    const base = `http://127.0.0.1:${service.port}`;
    const health = await fetch(`${base}/healthz`);
    assert.deepEqual(await health.json(), { status: "ok", sessions: 0 });
    const ping = await pingTwice(service.port);
    assert.equal(ping.code, 0, ping.stderr);
    assert.match(ping.stdout, /2 transmitted, 2 received/);
  } finally {
    const { code, log } = await service.stop();
    assert.equal(code, 0, log);
  }
});

Deno.test("the k8s Deployment's args, with a certificate in the Secret's place, serve HTTPS probes and pongs", async () => {
  const documents = await manifests("deploy/ping/k8s.yaml");
  const deployment = documents.find((d) => d["kind"] === "Deployment") as unknown as Deployment;
  const args = deployment.spec!.template.spec!.containers[0]!.args!;
  const ca = await generateCertificateAuthority();
  const leaf = await ca.issue();
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/tls.crt`, leaf.certPem);
  await Deno.writeTextFile(`${dir}/tls.key`, leaf.keyPem);
  await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
  const local = args.map((arg) => arg.replace("/etc/duet-ping", dir));
  const service = await runLikeContainer("deploy/ping/Dockerfile", local);
  try {
    const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
    const health = await fetch(`https://127.0.0.1:${service.port}/healthz`, { client });
    assert.equal(health.status, 200, "the readiness probe's request");
    await health.body?.cancel();
    const info =
      await (await fetch(`https://127.0.0.1:${service.port}/.well-known/duet-ping.json`, {
        client,
      })).json();
    assert.equal(info.url, "https://ping.example.com/ping", "--public-url is published");
    client.close();
    const ping = await pingTwice(service.port, "--ca", `${dir}/ca.pem`);
    assert.equal(ping.code, 0, ping.stderr);
  } finally {
    const { code, log } = await service.stop();
    assert.equal(code, 0, log);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deploy/chat/compose.yaml: PostgreSQL with host-directory data, the chat service wired to it", async () => {
  const [compose] = await manifests("deploy/chat/compose.yaml");
  const services = compose!["services"] as Record<string, Record<string, unknown>>;
  assert.deepEqual(Object.keys(services).sort(), ["chat", "postgres"]);
  const volumes = services["postgres"]!["volumes"] as string[];
  assert.deepEqual(
    volumes,
    ["./postgres-data:/var/lib/postgresql/data"],
    "a host directory, not a named volume",
  );
  const env = services["chat"]!["environment"] as Record<string, string>;
  const url = new URL(env["DUET_CHAT_DATABASE_URL"]!);
  const pg = services["postgres"]!["environment"] as Record<string, string>;
  assert.equal(url.hostname, "postgres");
  assert.equal(url.username, pg["POSTGRES_USER"]);
  assert.equal(url.pathname, `/${pg["POSTGRES_DB"]}`);
  assert.deepEqual(services["chat"]!["ports"], ["7070:7070"]);
  assert.deepEqual(
    (services["chat"]!["depends_on"] as Record<string, unknown>)["postgres"],
    { condition: "service_healthy" },
  );
  const build = services["chat"]!["build"] as Record<string, string>;
  assert.equal(build["dockerfile"], "deploy/chat/Dockerfile");
});

testWith(postgres, {
  name:
    "the chat image's ENTRYPOINT + CMD, with the compose file's database variable, serves the protocol",
  async fn() {
    const { entrypoint, cmd } = await dockerCommand("deploy/chat/Dockerfile");
    assert.deepEqual(entrypoint, ["/duet"]);
    const schema = testSchema("duet_deploy");
    assert.equal((await run("psql", [postgres.url, "-c", `CREATE SCHEMA ${schema}`])).code, 0);
    const service = await runLikeContainer("deploy/chat/Dockerfile", cmd, {
      DUET_CHAT_DATABASE_URL: `${postgres.url}?options=-c%20search_path%3D${schema}`,
    });
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: service.port });
      const hello = new TextEncoder().encode(
        JSON.stringify({ type: "hello", version: PROTOCOL_VERSION, name: "ops", room: "deploy" }),
      );
      const frame = new Uint8Array(4 + hello.length);
      new DataView(frame.buffer).setUint32(0, hello.length);
      frame.set(hello, 4);
      await conn.write(frame);
      const reply = new Uint8Array(512);
      const n = (await conn.read(reply))!;
      assert.match(new TextDecoder().decode(reply.subarray(4, n)), /"type":"welcome"/);
      conn.close();
    } finally {
      const { code, log } = await service.stop();
      assert.equal(code, 0, log);
      await run("psql", [postgres.url, "-c", `DROP SCHEMA IF EXISTS ${schema} CASCADE`]);
    }
  },
});

Deno.test("each image's deno compile includes the command module it runs (loaded by a computed specifier)", async () => {
  for (const name of ["chat", "ping", "syncpoint"]) {
    const dockerfile = `deploy/${name}/Dockerfile`;
    const text = (await Deno.readTextFile(new URL(dockerfile, root))).replaceAll("\\\n", " ");
    const compile = text.match(/deno compile ([^\n]*)/)?.[1] ?? "";
    const included = [...compile.matchAll(/--include (\S+)/g)].map((m) => m[1]);
    const module = `apps/cli/commands/${name}.ts`;
    assert.ok(included.includes(module), `${dockerfile} includes ${module}: ${included}`);
    await Deno.stat(new URL(module, root));
  }
});
