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
import { findRedis, testWith, waitFor } from "@duet/testkit";

const root = new URL("../", import.meta.url);
const redis = await findRedis();

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

/**
 * Runs the duet binary's arguments the way the image would, but through `deno run` with
 * the flags of `deno compile` in the Dockerfile; port 0 instead of 8080. Resolves with the
 * URL from the "listening" log line and a function that stops the process (exit 0 expected).
 */
async function runLikeContainer(args: string[]) {
  const portAt = args.indexOf("--port");
  const local = args.map((arg, i) => (i === portAt + 1 ? "0" : arg));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-no-legacy-abort",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      new URL("apps/cli/main.ts", root).pathname,
      ...local,
    ],
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
      const line = log.split("\n").find((l) => l.includes('"url"'));
      url = line ? JSON.parse(line).properties.url : "";
      return url !== "";
    },
    "the listening log line",
    20_000,
  );
  return {
    url: url.replace("0.0.0.0", "127.0.0.1"),
    stop: async () => {
      child.kill("SIGTERM");
      const { code } = await child.status;
      await reading;
      return code;
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
  for (const document of documents) {
    const Model = models[`${document["apiVersion"]}/${document["kind"]}`]!;
    new Model(document).validate();
  }
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
  const service = await runLikeContainer(cmd);
  try {
    const health = await fetch(new URL("/healthz", service.url));
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    assert.equal(await service.stop(), 0);
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
    const service = await runLikeContainer([
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
      assert.equal(await service.stop(), 0);
    }
  },
});
