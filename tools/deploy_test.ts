// Deployment files, checked without Docker or a cluster (neither runs here): manifests are
// validated against the Kubernetes schemas offline (kubernetes-models), and the command
// lines a container would run are run with `deno run` and must serve. kubernetes-models
// rejects wrong types and missing required fields but not unknown (misspelled) fields, so
// the fields that matter are also asserted one by one.
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Service } from "kubernetes-models/v1/Service";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { findPostgres, findRedis, run, testSchema, testWith, waitFor } from "@duet/testkit";
import { generateCertificateAuthority } from "@duet/webtransport";
import { PROTOCOL_VERSION } from "@duet/chat";

const root = new URL("../", import.meta.url);
const redis = await findRedis();
const postgres = await findPostgres();

// deno-lint-ignore no-explicit-any
const models: Record<string, new (data: any) => { validate(): void }> = {
  "apps/v1/Deployment": Deployment,
  "v1/Service": Service,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
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

Deno.test("deploy/syncpoint/k8s.yaml validates against the Kubernetes schemas", async () => {
  const documents = await manifests("deploy/syncpoint/k8s.yaml");
  const kinds = documents.map((d) => `${d["apiVersion"]}/${d["kind"]}`);
  assert.deepEqual(kinds.sort(), [
    "apps/v1/Deployment",
    "apps/v1/Deployment",
    "policy/v1/PodDisruptionBudget",
    "v1/Service",
    "v1/Service",
  ]);
  validateAll(documents);
  const syncpoint = documents.find((d) =>
    d["kind"] === "Deployment" && (d["metadata"] as { name: string }).name === "syncpoint"
  ) as unknown as Deployment;
  assert.equal(syncpoint.spec?.replicas, 2, "two replicas");
  const container = syncpoint.spec!.template.spec!.containers[0]!;
  assert.equal(container.readinessProbe?.httpGet?.path, "/healthz");
  assert.equal(container.livenessProbe?.tcpSocket?.port, "http");
  assert.deepEqual(container.ports?.map((p) => p.containerPort), [8080]);
});

Deno.test("a manifest with a mistake fails validation (the check can fail)", () => {
  assert.throws(() =>
    new Deployment({
      metadata: { name: "broken" },
      spec: {
        selector: {},
        template: { spec: { containers: [{ name: "x", ports: [{ containerPort: "http" }] }] } },
      },
    } as never).validate()
  );
});

Deno.test("the syncpoint image's ENTRYPOINT + CMD starts a service that answers /healthz", async () => {
  const { entrypoint, cmd } = await dockerCommand("deploy/syncpoint/Dockerfile");
  assert.deepEqual(entrypoint, ["/duet"]);
  const service = await runLikeContainer("deploy/syncpoint/Dockerfile", cmd);
  try {
    const health = await fetch(new URL("/healthz", service.url));
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    const { code, log } = await service.stop();
    assert.equal(code, 0, log);
  }
});

testWith(redis, {
  name: "the k8s Deployment's args, with the test Redis, start a service that pairs",
  fn: async () => {
    const documents = await manifests("deploy/syncpoint/k8s.yaml");
    const deployment = documents.find((d) =>
      (d["metadata"] as { name: string }).name === "syncpoint" && d["kind"] === "Deployment"
    ) as unknown as Deployment;
    const args = deployment.spec!.template.spec!.containers[0]!.args!;
    const redisAt = args.indexOf("--redis-url");
    assert.ok(redisAt >= 0, "the manifest shares the rendezvous through Redis");
    const local = args.map((arg, i) => (i === redisAt + 1 ? redis.url : arg));
    const service = await runLikeContainer("deploy/syncpoint/Dockerfile", [
      ...local,
      "--redis-prefix",
      `duet-test:${crypto.randomUUID()}`,
    ]);
    try {
      const first = fetch(new URL("/wait-for-second-party/k8s", service.url), {
        method: "POST",
        body: "a",
      });
      await waitFor(
        async () => (await (await fetch(new URL("/healthz", service.url))).json()).waiting === 1,
        "the first party to wait",
      );
      const second = await fetch(new URL("/wait-for-second-party/k8s", service.url), {
        method: "POST",
        body: "b",
      });
      assert.equal((await second.json()).peer_payload, "a");
      assert.equal((await (await first).json()).peer_payload, "b");
    } finally {
      const { code, log } = await service.stop();
      assert.equal(code, 0, log);
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
