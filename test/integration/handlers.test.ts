/**
 * The Lambda handlers with the event shapes Lambda sends: partial batch responses
 * for deliveries, the authorizer's policy and usage key, and the API entry file
 * exactly as it is bundled for Lambda.
 */
import { randomUUID } from 'node:crypto';
import { CreateQueueCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import type { LambdaEvent } from 'hono/aws-lambda';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { DeliveryQueue, readDeliverQueueBody } from '../../functions/adapters/delivery-queue.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { TenantStore } from '../../functions/adapters/tenant-store.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import { makeAuthorizerHandler, REFUSED_LOG_INTERVAL_MS } from '../../functions/authorizer/process.ts';
import { hashKey } from '../../functions/core/keys.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import { RECORD_FAILURE_METRICS } from '../../functions/definitions/alarms.ts';
import { ENV } from '../../functions/definitions/environment.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import { AUTHORIZER_ATTRIBUTES } from '../../functions/definitions/tables.ts';
import { DELIVERY_QUEUE_LAG, makeDeliveryHandler } from '../../functions/delivery/process.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { deployedEnvironment } from '../support/function-env.ts';
import { type Receiver, verifyDelivery } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { sqsRecord as recordOf } from '../support/sqs-events.ts';

let sandbox: Sandbox;
let receiver: Receiver;
let tenant: { id: string; key: string };

const context = { functionName: 'test', awsRequestId: 'r', getRemainingTimeInMillis: () => 10_000 } as unknown as Context;

/** A record of `body` as JSON, of the FIFO group `groupId` if given. */
function sqsRecord(body: unknown, groupId?: string): SQSRecord {
  return recordOf(JSON.stringify(body), groupId ? { MessageGroupId: groupId } : {});
}

/** A delivery handler over the sandbox's stores, and the DeliveryQueueLag values it reports. */
function lagReporting() {
  const lags: number[] = [];
  const handler = makeDeliveryHandler({
    ...deliveryDeps(sandbox.wiring, sandbox.notifier),
    metrics: { count: () => {}, seconds: (name: string, value: number) => void (name === DELIVERY_QUEUE_LAG && lags.push(value)) },
  });
  return { handler, lags };
}

function delivery(webhookId: string, n: number): DeliveryMessage {
  return {
    deliveryId: `msg_${String(n).padStart(19, '0')}`,
    tenantId: tenant.id,
    webhookId,
    attempt: 1,
    events: [{ id: `evt_${n}`, seq: n, resource: 'h:1', parents: [], type: 'a.b', data: { n }, created_at: new Date().toISOString() }],
  };
}

withSandbox({ config: { deliveryTimeoutMs: 500 } }, async (s, r) => {
  [sandbox, receiver] = [s, r];
  tenant = await createTenant(sandbox);
});

describe('delivery handler', () => {
  it('delivers the good records of a batch and reschedules the failed attempts instead of failing the batch', async () => {
    const good = await createWebhook(sandbox, tenant.key, { resource: 'h:1', url: `${receiver.url}/h/good` });
    const bad = await createWebhook(sandbox, tenant.key, { resource: 'h:1', url: `${receiver.url}/h/bad` });
    const slow = await createWebhook(sandbox, tenant.key, { resource: 'h:1', url: `${receiver.url}/h/slow` });
    receiver.answer('/h/bad', 503);
    receiver.answer('/h/slow', 'hang');
    const handler = makeDeliveryHandler(deliveryDeps(sandbox.wiring, sandbox.notifier));
    const retried = sandbox.metrics.total('DeliveriesRetried');
    const records = [
      sqsRecord(delivery(good.id, 1)),
      sqsRecord(delivery(bad.id, 2)),
      sqsRecord(delivery(slow.id, 3)),
      sqsRecord(delivery(good.id, 4)),
    ];
    const response = await handler({ Records: records } as SQSEvent, context);
    expect(response.batchItemFailures).toEqual([]);
    expect(receiver.events('/h/good').map((e) => e.seq)).toEqual([1, 4]);
    for (const d of receiver.deliveries('/h/good')) expect(verifyDelivery(good.secret, d)).toBeTruthy();
    expect(sandbox.metrics.total('DeliveriesRetried')).toBe(retried + 2);
    const badAttempts = await call(sandbox, 'GET', `/v1/webhooks/${bad.id}/attempts`, { key: tenant.key });
    expect(badAttempts.body.data[0]).toMatchObject({
      attempt: 1,
      status_code: 503,
      error: 'HTTP 503',
      delivery_id: delivery(bad.id, 2).deliveryId,
    });
    const slowAttempts = await call(sandbox, 'GET', `/v1/webhooks/${slow.id}/attempts`, { key: tenant.key });
    expect(slowAttempts.body.data[0]).toMatchObject({ status_code: null, error: expect.stringMatching(/no answer/) });
  });

  it('reports how late the batch came after its messages were due, not how long ago they were sent', async () => {
    const { handler, lags } = lagReporting();
    const now = Date.now();
    // Sent long ago with a long delay, due just now; and one that was due 400 s ago (a backlog).
    // Both are for a webhook that is gone, so nothing else happens to them.
    const onTime = { ...delivery('wh_gone', 1), dueAt: now };
    const late = { ...delivery('wh_gone', 2), dueAt: now - 400_000 };
    await handler({ Records: [sqsRecord(onTime)] } as SQSEvent, context);
    await handler({ Records: [sqsRecord(onTime), sqsRecord(late)] } as SQSEvent, context);
    // A message without the stamp (sent before it existed) reports nothing.
    await handler({ Records: [sqsRecord(delivery('wh_gone', 3))] } as SQSEvent, context);
    expect(lags).toHaveLength(2);
    expect(lags[0]).toBeLessThan(5);
    expect(lags[1]).toBeGreaterThanOrEqual(400);
    expect(lags[1]).toBeLessThan(405);
  });

  it('leaves out of the lag a message received again after a failed receive, which waited out its visibility timeout on purpose', async () => {
    const { handler, lags } = lagReporting();
    // Due 400 s ago and first received then, on time; its handler failed (DynamoDB erring,
    // an invocation that timed out) twice, and SQS hands it over again each visibility timeout.
    const now = Date.now();
    const again = sqsRecord({ ...delivery('wh_gone', 4), dueAt: now - 400_000 });
    const record = { ...again, attributes: { ...again.attributes, ApproximateReceiveCount: '3' } };
    await handler({ Records: [record] } as SQSEvent, context);
    // Beside a message received for the first time, on time: the batch reports that one.
    await handler({ Records: [record, sqsRecord({ ...delivery('wh_gone', 5), dueAt: now })] } as SQSEvent, context);
    expect(lags).toHaveLength(1);
    expect(lags[0]).toBeLessThan(5);
  });

  it('counts a message redriven from the dead-letter queue late from the redrive, not from its old due time', async () => {
    const { handler, lags } = lagReporting();
    // Due an hour ago, dead-lettered, and redriven 2 s ago: SQS gives it a new send time
    // and receive count, and it is received for the first time again.
    const now = Date.now();
    const redriven = sqsRecord({ ...delivery('wh_gone', 6), dueAt: now - 3_600_000 });
    const record = { ...redriven, attributes: { ...redriven.attributes, SentTimestamp: String(now - 2_000) } };
    await handler({ Records: [record] } as SQSEvent, context);
    expect(lags).toHaveLength(1);
    expect(lags[0]).toBeGreaterThanOrEqual(2);
    expect(lags[0]).toBeLessThan(7);
  });

  it('stamps every deliver-queue message with when it is due, and keeps the stamp out of the message it hands on', async () => {
    // A queue of its own, so that no poller takes the message first.
    const { QueueUrl } = await sandbox.wiring.sqs.send(new CreateQueueCommand({ QueueName: `stamp-${randomUUID()}` }));
    const queue = new DeliveryQueue({ client: sandbox.wiring.sqs, queueUrl: QueueUrl as string });
    const sent = delivery('wh_x', 1);
    const before = Date.now();
    await queue.send([sent], 1);
    const sentBy = Date.now();
    const received = await sandbox.wiring.sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 5 }));
    const { message, dueAt } = readDeliverQueueBody(received.Messages?.[0]?.Body as string);
    expect(dueAt).toBeGreaterThanOrEqual(before + 1_000);
    expect(dueAt).toBeLessThanOrEqual(sentBy + 1_000);
    expect(message).toEqual(sent);
  });

  it('reports a malformed record alone as failed', async () => {
    const handler = makeDeliveryHandler(deliveryDeps(sandbox.wiring, sandbox.notifier));
    const broken = { ...sqsRecord({}), body: '{not json' };
    const response = await handler({ Records: [broken] } as SQSEvent, context);
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: broken.messageId }]);
  });

  it('counts and logs a record that failed, which fails no invocation (Lambda counts no error for it)', async () => {
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const counted: string[] = [];
    const logged: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const deps = {
      ...base,
      // DynamoDB failing the webhook's read.
      webhooks: new Proxy(base.webhooks, {
        get: (store, name) =>
          name === 'get'
            ? async () => {
                throw Object.assign(new Error('Internal server error'), { name: 'InternalServerError' });
              }
            : Reflect.get(store, name),
      }),
      metrics: { count: (name: string) => void counted.push(name) },
      logger: { ...base.logger, error: (message: string, fields: Record<string, unknown> = {}) => void logged.push({ message, fields }) },
    } as typeof base;
    const record = sqsRecord(delivery('wh_0000000000000000001', 1));
    const response = await makeDeliveryHandler(deps)({ Records: [record] } as SQSEvent, context);
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: record.messageId }]);
    expect(counted).toContain(RECORD_FAILURE_METRICS.delivery);
    expect(logged).toMatchObject([
      {
        message: expect.stringContaining('deliver-queue record failed'),
        fields: {
          messageId: record.messageId,
          tenant: tenant.id,
          webhook: 'wh_0000000000000000001',
          error: { name: 'InternalServerError' },
        },
      },
    ]);
  });

  it('says when a failed record is at its last receive, which SQS moves to the dead-letter queue instead of giving back', async () => {
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const logged: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const deps = {
      ...base,
      metrics: { count: () => undefined },
      logger: { ...base.logger, error: (message: string, fields: Record<string, unknown> = {}) => void logged.push({ message, fields }) },
    } as typeof base;
    // A body no delivery can read fails at every receive: the 7th comes back, the 8th (maxReceiveCount) does not.
    const at = (count: number) => {
      const record = sqsRecord({ tenantId: tenant.id, webhookId: 'wh_0000000000000000002' });
      return { ...record, attributes: { ...record.attributes, ApproximateReceiveCount: String(count) } };
    };
    await makeDeliveryHandler(deps)({ Records: [at(DELIVER_QUEUE.maxReceiveCount - 1)] } as SQSEvent, context);
    await makeDeliveryHandler(deps)({ Records: [at(DELIVER_QUEUE.maxReceiveCount)] } as SQSEvent, context);
    expect(logged.map((line) => [line.message, line.fields.receiveCount, line.fields.deadLettered])).toEqual([
      ['A deliver-queue record failed; SQS brings it back after its visibility timeout', 7, undefined],
      [expect.stringContaining('at its last receive; SQS moves it to the dead-letter queue'), 8, true],
    ]);
  });

  it('disables a webhook whose endpoint answers 410, and drops deliveries to deleted webhooks with a count', async () => {
    const gone = await createWebhook(sandbox, tenant.key, { resource: 'h:2', url: `${receiver.url}/h/gone` });
    const deleted = await createWebhook(sandbox, tenant.key, { resource: 'h:2', url: `${receiver.url}/h/deleted` });
    await call(sandbox, 'DELETE', `/v1/webhooks/${deleted.id}`, { key: tenant.key });
    receiver.answer('/h/gone', 410);
    const handler = makeDeliveryHandler(deliveryDeps(sandbox.wiring, sandbox.notifier));
    const dropped = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });
    const response = await handler({ Records: [sqsRecord(delivery(gone.id, 1)), sqsRecord(delivery(deleted.id, 2))] } as SQSEvent, context);
    expect(response.batchItemFailures).toEqual([]);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${gone.id}`, { key: tenant.key })).body.status).toBe('disabled');
    expect(sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' })).toBe(dropped + 1);
    expect(sandbox.metrics.total('WebhooksDisabled')).toBeGreaterThanOrEqual(1);
    expect(sandbox.notifier.notices.find((n) => n.webhook === gone.id)).toMatchObject({
      type: 'webhook.disabled',
      tenant: tenant.id,
      reason: 'gone',
      last_error: { status_code: 410 },
    });
  });
});

describe('authorizer', () => {
  const methodArn = 'arn:aws:execute-api:us-east-1:123456789012:abc123/v1/POST/v1/events';

  it('allows the whole API for a tenant key, reporting the tenant and its usage-plan key', async () => {
    const tenants = new TenantStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const authorizer = makeAuthorizerHandler({
      adminKeyHash: async () => hashKey(sandbox.adminKey),
      tenants,
      adminUsageKey: 'admin-usage',
    });
    const result = await authorizer({ type: 'TOKEN', authorizationToken: `Bearer ${tenant.key}`, methodArn });
    const stored = await tenants.get(tenant.id);
    expect(result.principalId).toBe(tenant.id);
    expect(result.usageIdentifierKey).toBe(stored?.usageKey);
    expect(result.context).toEqual({ principal: 'tenant', tenantId: tenant.id });
    expect(result.policyDocument.Statement).toEqual([
      { Action: 'execute-api:Invoke', Effect: 'Allow', Resource: 'arn:aws:execute-api:us-east-1:123456789012:abc123/v1/*' },
    ]);

    const admin = await authorizer({ type: 'TOKEN', authorizationToken: `Bearer ${sandbox.adminKey}`, methodArn });
    expect(admin).toMatchObject({ principalId: 'admin', usageIdentifierKey: 'admin-usage', context: { principal: 'admin' } });
  });

  it('refuses a bad key with a Deny policy, not a function error: Lambda counts a thrown error in Errors, which pages on-call', async () => {
    const tenants = new TenantStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const authorizer = makeAuthorizerHandler({ adminKeyHash: async () => hashKey(sandbox.adminKey), tenants, adminUsageKey: 'a' });
    for (const token of ['', 'Bearer nope', `Bearer ${tenant.key}x`, `Bearer ak_${'x'.repeat(43)}`]) {
      const refused = await authorizer({ type: 'TOKEN', authorizationToken: token, methodArn });
      expect(refused.policyDocument.Statement, token).toEqual([
        { Action: 'execute-api:Invoke', Effect: 'Deny', Resource: 'arn:aws:execute-api:us-east-1:123456789012:abc123/v1/*' },
      ]);
      expect(refused.usageIdentifierKey, token).toBeUndefined();
      expect(refused.context ?? {}, token).toEqual({});
    }
  });

  it('allows a tenant key used right after its creation, though a replica that lags would not have it yet (a Deny is kept by API Gateway for a minute)', async () => {
    // A client whose eventually consistent reads of key items come from a replica that
    // has not seen the tenant's creation yet (DynamoDB's replicas usually catch up within
    // a second); strongly consistent reads go to the emulator.
    const lagging = documentClient(sandbox.emulators.dynamo);
    lagging.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { Key?: { pk?: unknown }; ConsistentRead?: boolean };
        if (String(input.Key?.pk).startsWith('apikey#') && input.ConsistentRead !== true) {
          return { output: { $metadata: {} }, response: {} } as Awaited<ReturnType<typeof next>>;
        }
        return next(args);
      },
      { step: 'initialize', name: 'laggingReplica' },
    );
    const fresh = await createTenant(sandbox, 'just-created');
    const authorizer = makeAuthorizerHandler({
      adminKeyHash: async () => hashKey(sandbox.adminKey),
      tenants: new TenantStore({ client: lagging, tableName: sandbox.wiring.controlTable }),
      adminUsageKey: 'a',
    });
    const result = await authorizer({ type: 'TOKEN', authorizationToken: `Bearer ${fresh.key}`, methodArn });
    expect(result.policyDocument.Statement[0]).toMatchObject({ Effect: 'Allow' });
    expect(result.principalId).toBe(fresh.id);
  });

  it('counts each refusal by the kind of key and logs them once a minute, never the key; a failed lookup is logged and thrown', async () => {
    const tenants = new TenantStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const counted: Array<[string, number | undefined, unknown]> = [];
    const logged: Array<[string, string, unknown]> = [];
    const logger = {
      info: (message: string, fields?: unknown) => void logged.push(['info', message, fields]),
      warn: (message: string, fields?: unknown) => void logged.push(['warn', message, fields]),
      error: (message: string, fields?: unknown) => void logged.push(['error', message, fields]),
    };
    const metrics = { count: (name: string, value?: number, dimensions?: unknown) => void counted.push([name, value, dimensions]) };
    let clock = 1_000_000;
    const authorizer = makeAuthorizerHandler({
      adminKeyHash: async () => hashKey(sandbox.adminKey),
      tenants,
      adminUsageKey: 'a',
      metrics,
      logger,
      now: () => clock,
    });
    const wrongTenantKey = `${tenant.key}x`;
    const refusedTokens = ['Bearer nope', `Bearer ${wrongTenantKey}`, `Bearer ak_${'x'.repeat(43)}`];
    for (const token of [...refusedTokens, ...refusedTokens]) {
      await authorizer({ type: 'TOKEN', authorizationToken: token, methodArn });
      clock += 5_000;
    }
    await authorizer({ type: 'TOKEN', authorizationToken: `Bearer ${tenant.key}`, methodArn });
    clock += REFUSED_LOG_INTERVAL_MS;
    await authorizer({ type: 'TOKEN', authorizationToken: 'Bearer nope', methodArn });
    expect(counted).toEqual(
      [...Array(2).fill(['malformed', 'tenant', 'admin']).flat(), 'malformed'].map((kind) => ['KeysRefused', 1, { kind }]),
    );
    // One line at the first refusal, then one a minute with what was refused since.
    expect(logged).toEqual([
      ['info', 'Keys refused', { refused_by_kind: { malformed: 1 } }],
      ['info', 'Keys refused', { refused_by_kind: { tenant: 2, admin: 2, malformed: 2 } }],
    ]);
    expect(JSON.stringify(logged)).not.toContain(wrongTenantKey);

    const broken = makeAuthorizerHandler({
      adminKeyHash: async () => hashKey(sandbox.adminKey),
      tenants: {
        findByKeyHash: async () => {
          throw new Error('DynamoDB is unavailable');
        },
      },
      adminUsageKey: 'a',
      metrics,
      logger,
    });
    await expect(broken({ type: 'TOKEN', authorizationToken: `Bearer ${tenant.key}`, methodArn })).rejects.toThrow(
      'DynamoDB is unavailable',
    );
    expect(logged.at(-1)?.slice(0, 2)).toEqual(['error', 'A key could not be checked']);
    expect(JSON.stringify(logged)).not.toContain(tenant.key);
  });

  it('reads only the attributes its role is allowed, each read naming them in a projection', async () => {
    const tenants = new TenantStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const authorizer = makeAuthorizerHandler({ adminKeyHash: async () => hashKey(sandbox.adminKey), tenants, adminUsageKey: 'a' });
    const reads: Array<{ Key: Record<string, string>; ProjectionExpression?: string; ExpressionAttributeNames?: Record<string, string> }> =
      [];
    sandbox.wiring.dynamo.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as (typeof reads)[number] & { TableName?: string };
        if (input.TableName === sandbox.wiring.controlTable && /^(apikey|tenant)#/.test(String(input.Key?.pk))) reads.push(input);
        return next(args);
      },
      { step: 'initialize', name: 'recordAuthorizerReads' },
    );
    try {
      await authorizer({ type: 'TOKEN', authorizationToken: `Bearer ${tenant.key}`, methodArn });
    } finally {
      sandbox.wiring.dynamo.middlewareStack.remove('recordAuthorizerReads');
    }
    // Its role may read no other attribute: a read without a projection would be refused in AWS.
    expect(reads).toHaveLength(2);
    for (const read of reads) {
      const projected = (read.ProjectionExpression ?? '')
        .split(',')
        .map((name) => read.ExpressionAttributeNames?.[name.trim()] ?? name.trim());
      expect(read.ProjectionExpression).toBeDefined();
      for (const name of [...projected, ...Object.keys(read.Key)]) expect(AUTHORIZER_ATTRIBUTES).toContain(name);
    }
  });
});

/**
 * Runs `act` with everything written to stdout and stderr (where Powertools writes its
 * logs and EMF metrics) kept rather than shown: answers what `act` answered and what was
 * written; `soFar` tells what was written until then.
 */
async function capturingOutput<T>(act: (soFar: () => string) => Promise<T>): Promise<{ result: T; output: string }> {
  const written: string[] = [];
  const stdout = process.stdout.write.bind(process.stdout);
  const stderr = process.stderr.write.bind(process.stderr);
  const record = (chunk: unknown) => {
    written.push(String(chunk));
    return true;
  };
  process.stdout.write = record as typeof process.stdout.write;
  process.stderr.write = record as typeof process.stderr.write;
  try {
    const result = await act(() => written.join(''));
    return { result, output: written.join('') };
  } finally {
    process.stdout.write = stdout;
    process.stderr.write = stderr;
  }
}

describe('Lambda entry files', () => {
  it('the authorizer writes no warning for a key it allows (it counts no metric then): one per invocation would fill its logs', async () => {
    Object.assign(process.env, {
      [ENV.controlTable]: sandbox.wiring.controlTable,
      [ENV.adminKeySecretArn]: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:admin',
      [ENV.adminUsageKey]: 'admin-usage',
      AWS_ENDPOINT_URL_DYNAMODB: sandbox.emulators.dynamo.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'sandbox',
      AWS_SECRET_ACCESS_KEY: 'sandbox',
      POWERTOOLS_LOG_LEVEL: 'SILENT',
      POWERTOOLS_METRICS_NAMESPACE: 'Sluice',
      POWERTOOLS_METRICS_DISABLED: 'false',
    });
    const { handler } = await import('../../functions/authorizer/handler.ts');
    const authorize = (key: string) =>
      handler({ type: 'TOKEN', authorizationToken: `Bearer ${key}`, methodArn: 'arn:aws:execute-api:us-east-1:1:abc/v1/GET/x' }, context);
    const { result, output } = await capturingOutput(async (soFar) => {
      const allowed = await authorize(tenant.key);
      const writtenWhenAllowed = soFar();
      return { allowed, writtenWhenAllowed, refused: await authorize(`${tenant.key}x`) };
    });
    expect(result.allowed.policyDocument.Statement[0]).toMatchObject({ Effect: 'Allow' });
    expect(result.writtenWhenAllowed).toBe('');
    // A refusal is still counted (EMF on stdout).
    expect(result.refused.policyDocument.Statement[0]).toMatchObject({ Effect: 'Deny' });
    expect(output).toMatch(/"KeysRefused"/);
  });

  it('serve API Gateway events: the API reads the caller from the authorizer context and rings the doorbell', async () => {
    Object.assign(process.env, deployedEnvironment(sandbox, 'v1'), { POWERTOOLS_METRICS_DISABLED: 'true' });
    const { handler } = await import('../../functions/api/handler.ts');
    const event = {
      httpMethod: 'POST',
      path: '/v1/events',
      resource: '/{proxy+}',
      headers: { 'content-type': 'application/json' },
      multiValueHeaders: {},
      queryStringParameters: null,
      multiValueQueryStringParameters: null,
      pathParameters: { proxy: 'v1/events' },
      stageVariables: null,
      isBase64Encoded: false,
      body: JSON.stringify({ events: [{ resource: 'lambda:1', type: 'a.b', data: { via: 'lambda' } }] }),
      requestContext: { authorizer: { principal: 'tenant', tenantId: tenant.id }, httpMethod: 'POST', path: '/v1/v1/events', stage: 'v1' },
    } as unknown as LambdaEvent;
    const response = (await handler(event, context)) as { statusCode: number; body: string };
    expect(response.statusCode).toBe(202);
    expect(JSON.parse(response.body).events[0]).toMatchObject({ status: 'accepted' });
    // The doorbell reached the distribute queue: the sandbox's distributor drains the object.
    const queues = new QueueStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.eventsTable, retentionDays: 7 });
    for (let i = 0; i < 100 && (await queues.readMeta({ tenantId: tenant.id, resource: 'lambda:1' }))?.cursor !== 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(await queues.readMeta({ tenantId: tenant.id, resource: 'lambda:1' })).toMatchObject({ cursor: 1, seq: 1, depth: 0 });

    const anonymous = (await handler(
      { ...event, requestContext: { ...event.requestContext, authorizer: null } } as unknown as LambdaEvent,
      context,
    )) as {
      statusCode: number;
      body: string;
    };
    expect(anonymous.statusCode).toBe(401);
    expect(JSON.parse(anonymous.body).error.code).toBe('unauthorized');

    // A body over 1 MiB is refused whatever length the client declared: API Gateway
    // passes the client's content-length, which need not be the body's.
    const padded = JSON.stringify({ events: [{ resource: 'lambda:2', type: 'a.b', data: 'x'.repeat(1_100_000) }] });
    const understated = (await handler(
      { ...event, headers: { 'content-type': 'application/json', 'content-length': '100' }, body: padded } as unknown as LambdaEvent,
      context,
    )) as { statusCode: number; body: string };
    expect(understated.statusCode).toBe(413);
    expect(JSON.parse(understated.body).error.code).toBe('payload_too_large');
  });

  it('the API writes no warning for a request that counts no metric (a stream poll, a read): one per request would fill its logs', async () => {
    Object.assign(process.env, deployedEnvironment(sandbox, 'v1'), { POWERTOOLS_METRICS_NAMESPACE: 'Sluice' });
    const { handler } = await import('../../functions/api/handler.ts');
    const get = (path: string) =>
      ({
        httpMethod: 'GET',
        path,
        resource: '/{proxy+}',
        headers: {},
        multiValueHeaders: {},
        queryStringParameters: null,
        multiValueQueryStringParameters: null,
        pathParameters: { proxy: path.slice(1) },
        stageVariables: null,
        isBase64Encoded: false,
        body: null,
        requestContext: { authorizer: { principal: 'tenant', tenantId: tenant.id }, httpMethod: 'GET', path: `/v1${path}`, stage: 'v1' },
      }) as unknown as LambdaEvent;
    const { result: statuses, output } = await capturingOutput(async () => {
      const answered: number[] = [];
      for (const path of ['/v1/health', '/v1/webhooks'])
        answered.push(((await handler(get(path), context)) as { statusCode: number }).statusCode);
      return answered;
    });
    expect(statuses).toEqual([200, 200]);
    expect(output).toBe('');
  });
});
