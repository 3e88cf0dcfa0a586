/**
 * A tenant's webhook places (its count against `max_webhooks`) stay exact when the
 * SDK tries a write again after a first try that applied but whose answer was lost:
 * the webhook, and each +1 and −1 of the count, is recognised as this call's own,
 * never refused and never applied twice.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, GetCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { SendBudgets } from '../../functions/adapters/send-budgets.ts';
import { TenantStore } from '../../functions/adapters/tenant-store.ts';
import { makeSender, type SendResult, webhookResolver } from '../../functions/adapters/webhook-sender.ts';
import { PLACES_SETTLE_MS, WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { WebhookService, type WebhookServiceDeps } from '../../functions/app/webhooks.ts';
import { liveSecrets, type Tenant } from '../../functions/core/model.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import { startDnsServer } from '../support/dns-server.ts';
import { loseFirstAnswers } from '../support/faults.ts';
import { webhookFixture } from '../support/fixtures.ts';

let emulators: Emulators;
let controlTable: string;
let client: ReturnType<typeof documentClient>;
let counter = 0;

/** Which write loses the answer to its first try; undefined: none. */
let losing: ((input: string) => boolean) | undefined;
let lossy: ReturnType<typeof documentClient>;

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  controlTable = tables.Control as string;
  client = documentClient(emulators.dynamo);
  // The first try of the write `losing` picks reaches DynamoDB and applies, but its
  // answer is lost (the connection resets): the SDK tries again, as it does for such errors.
  lossy = documentClient(emulators.dynamo);
  loseFirstAnswers(lossy, (input) => losing?.(JSON.stringify(input)) ?? false);
});

afterEach(() => {
  losing = undefined;
});

afterAll(async () => {
  await emulators?.stop();
});

const isWebhookPut = (input: string) => input.includes('"Item"') && input.includes('webhook#');
const isCountWrite = (delta: number) => (input: string) => input.includes('#webhook_count') && input.includes(`{"N":"${delta}"}`);

/** A tenant with `maxWebhooks` places, its item written as TenantStore writes it. */
async function tenant(maxWebhooks: number): Promise<Tenant> {
  const t: Tenant = {
    id: `ten_places${++counter}`,
    name: 'places',
    limits: { max_webhooks: maxWebhooks, rate_per_second: 10, burst: 10 },
    usageKey: 'usage',
    createdAt: new Date().toISOString(),
  };
  await new TenantStore({ client, tableName: controlTable }).create(t, `hash-${t.id}`, {});
  return t;
}

async function webhookCount(tenantId: string): Promise<number> {
  const result = await client.send(new GetCommand({ TableName: controlTable, Key: { pk: `tenant#${tenantId}`, sk: 'tenant' } }));
  return Number(result.Item?.webhook_count);
}

/** The delivery store the service's URL verifications take their budget from (the real store). */
function verifications(): { sendBudgets: Pick<SendBudgets, 'takeSlot'> } {
  const budgets = new SendBudgets({ client, tableName: controlTable });
  return { sendBudgets: { takeSlot: (...args) => budgets.takeSlot(...args) } };
}

/** What a deleted webhook's delivery stores forget: nothing (see `forgetWebhook`). */
const forgetsNothing = { paces: { giveBack: async () => {} }, held: { forget: async () => 0 }, gaps: { forget: async () => {} } };

/** The webhook service over the lossy client; endpoints answer the ping with `pingStatus`. */
function service(t: Tenant, pingStatus = 200) {
  const webhooks = new WebhookStore({ client: lossy, tableName: controlTable });
  const answer: SendResult = { statusCode: pingStatus, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' };
  const deps = {
    webhooks,
    tenants: { get: async (id: string) => (id === t.id ? t : undefined) },
    send: async () => answer,
    timeoutMs: 1_000,
    now: Date.now,
    delivery: verifications() as unknown as WebhookServiceDeps['delivery'],
  };
  return { webhooks, service: new WebhookService(deps) };
}

const input = (n: number) => ({ resource: `place:${n}`, url: 'https://example.test/hook', types: ['*'], description: '' });

describe('a webhook write whose answer was lost', () => {
  it('creates the webhook once and answers with its secret when the put was tried again', async () => {
    const t = await tenant(2);
    const { webhooks, service: webhooksApi } = service(t);
    losing = isWebhookPut;
    const created = await webhooksApi.create(t.id, input(1));
    losing = undefined;
    // The caller has the secret the stored webhook signs with.
    expect((await webhooks.get(t.id, created.id))?.secrets).toEqual([created.secret]);
    expect(await webhookCount(t.id)).toBe(1);
    // Its place stays taken: the cap still holds.
    await webhooksApi.create(t.id, input(2));
    await expect(webhooksApi.create(t.id, input(3))).rejects.toMatchObject({ code: 'limit_exceeded' });
    expect(await webhookCount(t.id)).toBe(2);
  });

  it('still refuses a put over a different webhook stored under the same id', async () => {
    const t = await tenant(2);
    const { webhooks } = service(t);
    const hook = webhookFixture({ id: 'wh_0collision', tenantId: t.id, secrets: ['whsec_first'] });
    await webhooks.put(hook);
    losing = isWebhookPut;
    await expect(webhooks.put({ ...hook, secrets: ['whsec_second'] })).rejects.toMatchObject({ name: 'ConditionalCheckFailedException' });
    losing = undefined;
    expect((await webhooks.get(t.id, hook.id))?.secrets).toEqual(['whsec_first']);
  });
});

describe('a write forgetting a slow endpoint whose answer was lost', () => {
  it("answers that it forgot the slowness when the SDK's second try was refused by its own first, so the endpoint's time is given back", async () => {
    const t = await tenant(2);
    const { webhooks } = service(t);
    const hook = webhookFixture({ id: 'wh_0forgot', tenantId: t.id });
    await webhooks.put(hook);
    await webhooks.noteSlowAnswers(t.id, hook.id, hook.url, 1_500);
    losing = (write) => write.includes('REMOVE #slow_ms');

    // The quick answer that ends its slowness: the first try applies, its answer is lost.
    expect(await webhooks.forgetSlowAnswers(t.id, hook.id, hook.url, 1_500)).toBe(true);
    expect((await webhooks.get(t.id, hook.id))?.slowMs).toBeUndefined();
    // Another quick answer to a POST sent as slowly did not forget it: its time is not given back twice.
    losing = undefined;
    expect(await webhooks.forgetSlowAnswers(t.id, hook.id, hook.url, 1_500)).toBe(false);
  });
});

describe('a count write whose answer was lost', () => {
  it('takes the last place when its reserve was tried again', async () => {
    const t = await tenant(2);
    const { service: webhooksApi } = service(t);
    await webhooksApi.create(t.id, input(1));
    losing = isCountWrite(1);
    await webhooksApi.create(t.id, input(2));
    losing = undefined;
    expect(await webhookCount(t.id)).toBe(2);
    await expect(webhooksApi.create(t.id, input(3))).rejects.toMatchObject({ code: 'limit_exceeded' });
  });

  it('gives a place back once when its release was tried again', async () => {
    const t = await tenant(2);
    const { webhooks, service: refused } = service(t, 500);
    // One webhook stored in its place, then a create whose endpoint refuses the ping.
    await webhooks.reservePlace(t.id, 2);
    await webhooks.put(webhookFixture({ id: 'wh_0kept', tenantId: t.id }));
    losing = isCountWrite(-1);
    await expect(refused.create(t.id, input(1))).rejects.toMatchObject({ code: 'endpoint_verification_failed' });
    losing = undefined;
    expect(await webhookCount(t.id)).toBe(1);
  });

  it('gives a deleted webhook’s place back once when its −1 was tried again', async () => {
    const t = await tenant(2);
    const { webhooks, service: webhooksApi } = service(t);
    const [first] = await Promise.all([webhooksApi.create(t.id, input(1)), webhooksApi.create(t.id, input(2))]);
    losing = isCountWrite(-1);
    expect(await webhooks.delete(t.id, first?.id as string)).toBeTruthy();
    losing = undefined;
    expect(await webhookCount(t.id)).toBe(1);
  });

  it('counts a delete that was tried again as done, and gives its place back', async () => {
    const t = await tenant(2);
    const { webhooks, service: webhooksApi } = service(t);
    const created = await webhooksApi.create(t.id, input(1));
    losing = (request) => request.includes('"ConditionExpression":"attribute_exists(#pk)"') && !request.includes('UpdateExpression');
    expect(await webhooks.delete(t.id, created.id)).toBeTruthy();
    losing = undefined;
    expect(await webhooks.get(t.id, created.id)).toBeUndefined();
    expect(await webhookCount(t.id)).toBe(0);
    // Deleting it again finds nothing, and takes nothing more off the count.
    expect(await webhooks.delete(t.id, created.id)).toBe(false);
    expect(await webhookCount(t.id)).toBe(0);
  });
});

describe('a delete whose place cannot be given back', () => {
  it('answers the delete as done, the webhook being gone, and logs the place it kept, rather than fail into a 404 when tried again', async () => {
    const t = await tenant(2);
    const failing = documentClient(emulators.dynamo);
    failing.middlewareStack.add(
      (next) => async (args) => {
        if (isCountWrite(-1)(JSON.stringify(args.input)))
          throw Object.assign(new Error('DynamoDB is unavailable'), { name: 'InternalServerError' });
        return next(args);
      },
      { step: 'build', name: 'failPlaceBack' },
    );
    const logged: Array<[string, unknown]> = [];
    const webhooks = new WebhookStore({ client: failing, tableName: controlTable });
    const deleting = new WebhookService({
      webhooks,
      tenants: { get: async (id: string) => (id === t.id ? t : undefined) },
      send: async () => ({ statusCode: 200, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' }),
      timeoutMs: 1_000,
      now: Date.now,
      delivery: {
        ...forgetsNothing,
        ...verifications(),
        metrics: { count: () => {} },
        logger: { info: () => {}, warn: () => {}, error: (message: string, fields: unknown) => void logged.push([message, fields]) },
      } as unknown as WebhookServiceDeps['delivery'],
    });
    const created = await deleting.create(t.id, input(1));
    await deleting.delete(t.id, created.id);
    expect(await webhooks.get(t.id, created.id)).toBeUndefined();
    expect(logged).toMatchObject([[expect.stringMatching(/place .* not given back/), { tenant: t.id, webhook: created.id }]]);
    failing.destroy();
  });
});

/** A service whose −1 count writes fail while `failPlaces` is set, logging to `logged`. */
function failingPlaces(t: Tenant, now: () => number = Date.now, pingStatus = 200) {
  const state = { failPlaces: false };
  const failing = documentClient(emulators.dynamo);
  failing.middlewareStack.add(
    (next) => async (args) => {
      if (state.failPlaces && isCountWrite(-1)(JSON.stringify(args.input)))
        throw Object.assign(new Error('DynamoDB is unavailable'), { name: 'InternalServerError' });
      return next(args);
    },
    { step: 'build', name: 'failPlaceBack' },
  );
  const logged: Array<[string, unknown]> = [];
  const log = (message: string, fields: unknown) => void logged.push([message, fields]);
  const webhooks = new WebhookStore({ client: failing, tableName: controlTable, now });
  let answer = pingStatus;
  const api = new WebhookService({
    webhooks,
    tenants: { get: async (id: string) => (id === t.id ? t : undefined) },
    send: async () => ({ statusCode: answer, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' }),
    timeoutMs: 1_000,
    now,
    delivery: {
      ...forgetsNothing,
      ...verifications(),
      metrics: { count: () => {} },
      logger: { info: () => {}, warn: log, error: log },
    } as unknown as WebhookServiceDeps['delivery'],
  });
  return {
    api,
    state,
    logged,
    answer: (status: number) => {
      answer = status;
    },
    destroy: () => failing.destroy(),
  };
}

describe('a place that was not given back', () => {
  it('answers the create with its own error, and is set right by a create that finds the count full a minute later', async () => {
    const t = await tenant(1);
    let offset = 0;
    const { api, state, logged, answer, destroy } = failingPlaces(t, () => Date.now() + offset, 500);
    // The endpoint refuses the ping, and the place cannot be given back.
    state.failPlaces = true;
    await expect(api.create(t.id, input(1))).rejects.toMatchObject({ code: 'endpoint_verification_failed' });
    state.failPlaces = false;
    expect(logged).toMatchObject([[expect.stringMatching(/not stored, and its place .* not given back/), { tenant: t.id }]]);
    expect(await webhookCount(t.id)).toBe(1);

    // At once, a create may still be between its place and its webhook: the count stands.
    answer(200);
    await expect(api.create(t.id, input(2))).rejects.toMatchObject({ code: 'limit_exceeded' });

    // A minute on, no create can be: the count is the webhooks stored (none), and the place is taken.
    offset = PLACES_SETTLE_MS;
    const created = await api.create(t.id, input(3));
    expect(created.id).toMatch(/^wh_/);
    expect(await webhookCount(t.id)).toBe(1);
    expect(logged.at(-1)).toMatchObject([
      expect.stringMatching(/count was more than its webhooks/),
      { tenant: t.id, counted: 1, stored: 0 },
    ]);
    // The limit still holds: one webhook is stored in the one place.
    offset = 2 * PLACES_SETTLE_MS;
    await expect(api.create(t.id, input(4))).rejects.toMatchObject({ code: 'limit_exceeded' });
    expect(await webhookCount(t.id)).toBe(1);
    destroy();
  });
});

describe('creates refused at a full count, one after another', () => {
  it('count the webhooks stored at most once a minute between them, not each, and a lost place is still set right', async () => {
    const t = await tenant(2);
    const { service: setup } = service(t);
    const first = await setup.create(t.id, input(1));
    await setup.create(t.id, input(2));
    // Each query that counts the tenant's webhooks reads every one of them, whole.
    let counts = 0;
    const counting = documentClient(emulators.dynamo);
    counting.middlewareStack.add(
      (next) => async (args) => {
        if ((args.input as { Select?: string }).Select === 'COUNT') counts++;
        return next(args);
      },
      { step: 'initialize', name: 'countCounts' },
    );
    let offset = PLACES_SETTLE_MS;
    const store = new WebhookStore({ client: counting, tableName: controlTable, now: () => Date.now() + offset });

    // A minute after the count was written, a client retrying its create at the limit.
    for (let n = 0; n < 10; n++) await expect(store.reservePlace(t.id, 2)).rejects.toMatchObject({ code: 'limit_exceeded' });
    expect(counts).toBe(1);

    // A place lost (a webhook gone whose place was not given back) is found by the check a minute on.
    await client.send(new DeleteCommand({ TableName: controlTable, Key: { pk: `tenant#${t.id}`, sk: `webhook#${first.id}` } }));
    await expect(store.reservePlace(t.id, 2)).rejects.toMatchObject({ code: 'limit_exceeded' });
    expect(counts).toBe(1);
    offset = 2 * PLACES_SETTLE_MS + 1_000;
    expect(await store.reservePlace(t.id, 2)).toEqual({ repaired: { counted: 2, stored: 1 } });
    expect(counts).toBe(2);
    expect(await webhookCount(t.id)).toBe(2);
    counting.destroy();
  });
});

describe('a create that finds the count full while a delete is giving its place back', () => {
  it('leaves the count alone, so the limit holds once the delete is done', async () => {
    const t = await tenant(2);
    let offset = 0;
    const now = () => Date.now() + offset;
    const { service: setup } = service(t);
    await setup.create(t.id, input(1));
    const kept = await setup.create(t.id, input(2));
    const creating = failingPlaces(t, now);
    // The delete's webhook is gone; before its place is given back, a create comes, long
    // after the count was last written by a create.
    offset = 2 * PLACES_SETTLE_MS;
    let during: Promise<unknown> | undefined;
    const deleting = documentClient(emulators.dynamo);
    deleting.middlewareStack.add(
      (next) => async (args) => {
        if (isCountWrite(-1)(JSON.stringify(args.input)) && !during) {
          during = creating.api.create(t.id, input(3)).catch((error: unknown) => error);
          await during;
        }
        return next(args);
      },
      { step: 'build', name: 'createDuringDelete' },
    );
    const first = (await new WebhookStore({ client: lossy, tableName: controlTable }).page(t.id, 10)).webhooks.find(
      (w) => w.id !== kept.id,
    );
    expect(await new WebhookStore({ client: deleting, tableName: controlTable, now }).delete(t.id, first?.id as string)).toBeTruthy();
    // The create was refused (the place was not back yet), and the count is the one webhook stored.
    expect(await during).toMatchObject({ code: 'limit_exceeded' });
    expect(await webhookCount(t.id)).toBe(1);
    deleting.destroy();
    creating.destroy();
  });
});

describe('a secret rotation whose answer was lost', () => {
  it('is answered as done, with the secret it stored, and rotates once: the secret it replaced signs for 24 h', async () => {
    const t = await tenant(1);
    const { webhooks, service: webhooksApi } = service(t);
    const created = await webhooksApi.create(t.id, input(1));
    // Only the first rotating write loses its answer.
    let rotations = 0;
    losing = (request) => request.includes('#previous_secret_expires_at') && ++rotations === 1;
    const rotated = await webhooksApi.rotateSecret(t.id, created.id);
    losing = undefined;
    const stored = await webhooks.get(t.id, created.id);
    if (!stored) throw new Error('webhook gone');
    // Rotated once: the caller's new secret signs, and so does the one its receivers still verify with, for 24 h.
    expect(stored.secrets).toEqual([rotated.secret, created.secret]);
    expect(liveSecrets(stored, Date.now())).toEqual([rotated.secret, created.secret]);
    expect(liveSecrets(stored, Date.now() + 25 * 3_600_000)).toEqual([rotated.secret]);
  });
});

describe('a PATCH of the URL', () => {
  it('is checked as a creation is: a name that resolves to a private address is refused 400 and nothing changes', async () => {
    const t = await tenant(1);
    const { webhooks, service: webhooksApi } = service(t);
    const created = await webhooksApi.create(t.id, input(1));
    // A deployment without allowPrivateTargets, whose DNS answers the new name with a private address.
    const nameserver = await startDnsServer((name) => (name === 'inside.example.test' ? { A: ['10.0.0.5'] } : undefined));
    const resolver = webhookResolver();
    resolver.setServers([nameserver.address]);
    const strict = new WebhookService({
      webhooks,
      tenants: { get: async () => t },
      send: makeSender({ allowPrivateTargets: false, resolver }),
      timeoutMs: 1_000,
      now: Date.now,
      delivery: verifications() as unknown as WebhookServiceDeps['delivery'],
    });

    try {
      await expect(strict.update(t.id, created.id, { url: 'https://inside.example.test/hook', status: 'active' })).rejects.toMatchObject({
        code: 'invalid_request',
      });
      expect((await webhooks.get(t.id, created.id))?.url).toBe(created.url);
    } finally {
      await nameserver.close();
    }
  });
});
