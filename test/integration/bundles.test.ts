/**
 * The artifact `cdk deploy` uploads, not the TypeScript the other tests run: each
 * function's esbuild bundle, made by synthesizing the stack with bundling, loaded in a
 * fresh Node process as Lambda's runtime loads it (`index.handler` of an .mjs, with
 * no node_modules beside it: a bundle carries its own AWS SDK), with the environment
 * the template gives it, its AWS clients pointed at the sandbox's emulators, and
 * called with one event of the shape Lambda sends.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateQueueCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { App } from 'aws-cdk-lib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENV } from '../../functions/definitions/environment.ts';
import { SluiceStack } from '../../lib/sluice-stack.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook } from '../support/api.ts';
import { gatewayEvent } from '../support/gateway-events.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Loads a bundle as Lambda's runtime does and writes what its handler answered (or threw) to RESULT_FILE. */
const RUNTIME = `
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const [bundle, functionName] = process.argv.slice(2);
const deadline = Date.now() + 20_000;
const context = {
  functionName, functionVersion: '$LATEST', awsRequestId: 'req-1', memoryLimitInMB: '512',
  invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:' + functionName,
  logGroupName: '/aws/lambda/' + functionName, logStreamName: 's', callbackWaitsForEmptyEventLoop: true,
  getRemainingTimeInMillis: () => deadline - Date.now(),
};
let outcome;
try {
  const { handler } = await import(pathToFileURL(bundle).href);
  outcome = { result: await handler(JSON.parse(process.env.TEST_EVENT), context) };
} catch (error) {
  outcome = { error: String(error && error.stack || error) };
}
writeFileSync(process.env.RESULT_FILE, JSON.stringify(outcome ?? { result: null }));
process.exit(0);
`;

/** What a bundle may carry besides sluice's own code: its runtime dependencies, the AWS SDK among them. */
const RUNTIME_DEPENDENCY =
  /node_modules\/(@aws-lambda-powertools|@aws\/lambda-invoke-store|hono|@aws-sdk|@smithy|@aws-crypto|tslib|fast-xml-parser|strnum|mnemonist|obliterator)\//;

interface Bundled {
  readonly dir: string;
  readonly environment: Record<string, unknown>;
}

let sandbox: Sandbox;
let receiver: Receiver;
let tenant: { id: string; key: string };
let outdir: string;
const bundles = new Map<string, Bundled>();
/** Queues of the bundles' own, so that the sandbox's pollers take nothing sent to them. */
const queues: Record<string, string> = {};

beforeAll(async () => {
  // No node_modules above the bundles: not even the AWS SDK, which Lambda's runtime has
  // but which would then be the runtime's version, not the one the tests ran.
  outdir = await mkdtemp(join(tmpdir(), 'sluice-bundles-'));
  await writeFile(join(outdir, 'runtime.mjs'), RUNTIME);
  const app = new App({ outdir: join(outdir, 'cdk.out') });
  new SluiceStack(app, 'Sluice', { config: { allowPrivateTargets: true } });
  const assembly = app.synth();
  const template = assembly.getStackByName('Sluice').template as {
    Resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
  };
  for (const [id, resource] of Object.entries(template.Resources)) {
    if (resource.Type !== 'AWS::Lambda::Function') continue;
    // Its code is the asset whose hash names the zip CDK uploads: cdk.out/asset.<hash>.
    const { S3Key } = resource.Properties.Code as { S3Key: string };
    const environment = (resource.Properties.Environment as { Variables: Record<string, unknown> }).Variables;
    expect(resource.Properties.Handler).toBe('index.handler');
    bundles.set(id, { dir: join(assembly.directory, `asset.${S3Key.replace(/\.zip$/, '')}`), environment });
  }
}, 60_000);

afterAll(async () => {
  if (outdir) await rm(outdir, { recursive: true, force: true });
});

withSandbox({}, async (s, r) => {
  [sandbox, receiver] = [s, r];
  tenant = await createTenant(sandbox);
  for (const name of [ENV.distributeQueueUrl, ENV.distributeBulkQueueUrl, ENV.deliverQueueUrl]) {
    const { QueueUrl } = await sandbox.wiring.sqs.send(new CreateQueueCommand({ QueueName: `bundle-${name.toLowerCase()}` }));
    queues[name] = QueueUrl as string;
  }
});

function bundleOf(name: string): Bundled {
  const found = [...bundles.entries()].find(([id]) => id.includes(name));
  if (!found) throw new Error(`no function ${name} in the template`);
  return found[1];
}

/** The template's environment, its references made the sandbox's resources, and the SDK pointed at the emulators. */
function environmentOf(bundled: Bundled): Record<string, string> {
  const resolved: Record<string, string> = {
    [ENV.eventsTable]: sandbox.wiring.eventsTable,
    [ENV.controlTable]: sandbox.wiring.controlTable,
    ...queues,
    [ENV.adminKeySecretArn]: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:admin',
    [ENV.adminUsageKey]: 'admin-usage',
    [ENV.webhookDisabledTopicArn]: 'arn:aws:sns:us-east-1:123456789012:disabled',
    [ENV.restApiId]: 'abc123',
    [ENV.apiUrl]: 'https://abc123.execute-api.us-east-1.amazonaws.com/live',
    [ENV.canaryKeySecretArn]: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:canary',
    [ENV.canaryReceiverUrl]: 'https://r.lambda-url.us-east-1.on.aws/',
  };
  const environment: Record<string, string> = {};
  for (const [name, value] of Object.entries(bundled.environment)) {
    const given = typeof value === 'string' ? value : resolved[name];
    if (given === undefined) throw new Error(`no value for ${name}`);
    environment[name] = given;
  }
  return environment;
}

async function invoke(
  name: string,
  event: unknown,
  without: readonly string[] = [],
): Promise<{ result?: unknown; error?: string; output: string }> {
  const bundled = bundleOf(name);
  const resultFile = join(outdir, `${name}-${Date.now()}.json`);
  const env = {
    PATH: process.env.PATH ?? '',
    ...environmentOf(bundled),
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'sandbox',
    AWS_SECRET_ACCESS_KEY: 'sandbox',
    AWS_ENDPOINT_URL_DYNAMODB: sandbox.emulators.dynamo.endpoint as string,
    AWS_ENDPOINT_URL_SQS: sandbox.emulators.sqs.endpoint as string,
    // No emulator of these: a closed port, never AWS itself.
    AWS_ENDPOINT_URL_SECRETS_MANAGER: 'http://127.0.0.1:9',
    AWS_ENDPOINT_URL_SNS: 'http://127.0.0.1:9',
    AWS_ENDPOINT_URL_API_GATEWAY: 'http://127.0.0.1:9',
    AWS_LAMBDA_FUNCTION_NAME: name,
    AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
    TEST_EVENT: JSON.stringify(event),
    RESULT_FILE: resultFile,
  };
  for (const name of without) delete env[name as keyof typeof env];
  const output = await new Promise<string>((resolve) => {
    execFile(
      process.execPath,
      [join(outdir, 'runtime.mjs'), join(bundled.dir, 'index.mjs'), name],
      { cwd: bundled.dir, env, timeout: 30_000 },
      (_error, stdout, stderr) => resolve(`${stdout}${stderr}`),
    );
  });
  const outcome = JSON.parse(await readFile(resultFile, 'utf8').catch(() => `{"error":"no result"}`));
  return { ...outcome, output };
}

function sqsEvent(messages: ReadonlyArray<{ MessageId?: string; Body?: string; Attributes?: Record<string, string> }>, queueName: string) {
  return {
    Records: messages.map((message) => ({
      messageId: message.MessageId,
      receiptHandle: 'rh',
      body: message.Body,
      attributes: { ApproximateReceiveCount: '1', SentTimestamp: String(Date.now()), ...message.Attributes },
      messageAttributes: {},
      md5OfBody: '',
      eventSource: 'aws:sqs',
      eventSourceARN: `arn:aws:sqs:us-east-1:123456789012:${queueName}`,
      awsRegion: 'us-east-1',
    })),
  };
}

async function receiveAll(queueUrl: string) {
  const { Messages } = await sandbox.wiring.sqs.send(
    new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 5, MessageSystemAttributeNames: ['All'] }),
  );
  return Messages ?? [];
}

describe('the bundles cdk deploy uploads', () => {
  it('hold sluice and its runtime dependencies only, at a size Lambda loads fast', async () => {
    expect(bundles.size).toBe(7);
    for (const [id, bundled] of bundles) {
      const { size } = await stat(join(bundled.dir, 'index.mjs'));
      expect(size, id).toBeLessThan(750_000);
      const map = JSON.parse(await readFile(join(bundled.dir, 'index.mjs.map'), 'utf8')) as { sources: string[] };
      const outside = map.sources.filter((source) => !/(^|\/)functions\//.test(source) && !RUNTIME_DEPENDENCY.test(source));
      expect(outside, id).toEqual([]);
      // The SDK clients it carries are the lockfile's, as each client names its version in its user agent.
      const code = await readFile(join(bundled.dir, 'index.mjs'), 'utf8');
      const clients = new Set(map.sources.flatMap((source) => /node_modules\/@aws-sdk\/(client-[a-z-]+)\//.exec(source)?.[1] ?? []));
      expect(clients, id).toContain('client-dynamodb');
      for (const client of clients) {
        const { version } = JSON.parse(await readFile(join(REPO_ROOT, 'node_modules', '@aws-sdk', client, 'package.json'), 'utf8'));
        expect(code, `${id} ${client}`).toContain(`name:"@aws-sdk/${client}",version:"${version}"`);
      }
    }
  });

  it('carry an event from the API through the distributor and delivery bundles to a webhook, and each other bundle answers its event', async () => {
    const webhook = await createWebhook(sandbox, tenant.key, { resource: 'bundle:1', url: `${receiver.url}/bundle` });

    const authorized = await invoke('Authorizer', {
      type: 'TOKEN',
      authorizationToken: `Bearer ${tenant.key}`,
      methodArn: 'arn:aws:execute-api:us-east-1:123456789012:abc123/live/POST/v1/events',
    });
    expect(authorized.error, authorized.output).toBeUndefined();
    expect(authorized.result).toMatchObject({ principalId: expect.any(String), policyDocument: { Statement: [{ Effect: 'Allow' }] } });

    const body = new TextEncoder().encode(JSON.stringify({ events: [{ resource: 'bundle:1', type: 'a.b', data: { via: 'bundle' } }] }));
    const published = await invoke(
      'ApiHandler',
      gatewayEvent(
        { method: 'POST', path: '/v1/events', headers: [['Content-Type', 'application/json']], body },
        { principal: 'tenant', tenantId: tenant.id },
        ['*/*'],
      ),
    );
    expect(published.error, published.output).toBeUndefined();
    expect(published.result).toMatchObject({ statusCode: 202 });

    const doorbells = await receiveAll(queues[ENV.distributeQueueUrl] as string);
    expect(doorbells).toHaveLength(1);
    const distributed = await invoke('Distributor', sqsEvent(doorbells, 'distribute'));
    expect(distributed.error, distributed.output).toBeUndefined();
    expect(distributed.result).toEqual({ batchItemFailures: [] });

    const deliveries = await receiveAll(queues[ENV.deliverQueueUrl] as string);
    expect(deliveries).toHaveLength(1);
    const delivered = await invoke('DeliveryFunction', sqsEvent(deliveries, 'deliver'));
    expect(delivered.error, delivered.output).toBeUndefined();
    expect(delivered.result).toEqual({ batchItemFailures: [] });
    expect(receiver.events('/bundle').map((e) => e.data)).toEqual([{ via: 'bundle' }]);
    expect(webhook.id).toMatch(/^wh_/);

    const reconciled = await invoke('Reconciler', {
      version: '0',
      id: 'e',
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: '123456789012',
      time: new Date().toISOString(),
      region: 'us-east-1',
      resources: [],
      detail: {},
    });
    expect(reconciled.error, reconciled.output).toBeUndefined();
    expect(reconciled.result).toEqual(expect.any(Object));

    const ping = JSON.stringify({ events: [{ id: 'evt_1', type: 'webhook.ping', data: {} }] });
    const received = await invoke('CanaryReceiver', {
      version: '2.0',
      routeKey: '$default',
      rawPath: '/',
      rawQueryString: '',
      headers: { 'content-type': 'application/json' },
      requestContext: { http: { method: 'POST', path: '/' } },
      body: ping,
      isBase64Encoded: false,
    });
    expect(received.error, received.output).toBeUndefined();
    // The sandbox's canary has its webhook: an unsigned request is refused, after the receiver read its state.
    expect(received.result).toEqual({ statusCode: 401 });
  }, 120_000);

  it('the canary bundle loads, and an error thrown at a cold start is reported at its TypeScript source (source maps on)', async () => {
    // Its secrets are read at each run, from Secrets Manager, which has no emulator here: the run fails there.
    const canary = await invoke('OperationsCanaryFunction', { 'detail-type': 'Scheduled Event', source: 'aws.events', detail: {} });
    expect(canary.error).toMatch(/ECONNREFUSED/);
    const unconfigured = await invoke('CanaryReceiver', {}, [ENV.controlTable]);
    expect(unconfigured.error).toMatch(/CONTROL_TABLE/);
    expect(unconfigured.error).toMatch(/functions\/adapters\/aws\.ts:\d+/);
  }, 60_000);
});
