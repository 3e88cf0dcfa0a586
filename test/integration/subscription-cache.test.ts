/**
 * The distributor keeps each resource's webhooks and stream state between turns
 * (SubscriptionCache). A later turn reuses them with one version read, and every
 * change a turn must see (a webhook created, disabled or deleted, a stream
 * started) is seen by the next event.
 */
import { QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { Context, SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { account, instrument, newCounts } from '../../bench/accounting.ts';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { StreamStore } from '../../functions/adapters/stream-store.ts';
import { bumpSubscriptions, INDEX_SETTLE_MS, REFRESH_AHEAD_MS, SubscriptionCache } from '../../functions/adapters/subscription-cache.ts';
import { TenantStore } from '../../functions/adapters/tenant-store.ts';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { publish as ingest } from '../../functions/app/ingest.ts';
import { distributor } from '../../functions/app/runtime.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { BY_RESOURCE_INDEX, CONTROL_TABLE, DISTRIBUTOR_CONTROL_ATTRIBUTES, SUBSCRIPTIONS_SK } from '../../functions/definitions/tables.ts';
import { makeDistributorHandler } from '../../functions/distributor/process.ts';
import { sandboxTableName } from '../../sandbox/emulators.ts';
import { type Sandbox, startSandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { webhookFixture } from '../support/fixtures.ts';
import { type Receiver, startReceiver } from '../support/receiver.ts';
import { webhookService } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;
let tenant: { id: string; key: string };
const counts = newCounts();

beforeAll(async () => {
  receiver = await startReceiver();
  sandbox = await startSandbox({
    port: 0,
    canary: false,
    onCall: (call) => account(counts, call),
  });
  tenant = await createTenant(sandbox, 'cached');
});

afterAll(async () => {
  await sandbox?.stop();
  await receiver?.close();
});

const lookups = () => ({
  webhooks: counts.dynamoTargets['Query index by_resource'] ?? 0,
  streams: counts.dynamoTargets['GetItem stream/stream'] ?? 0,
});

async function publishAndWait(resource: string, data: number, path: string, arrives: boolean) {
  const before = receiver.acceptedEvents(path).length;
  const accepted = await publish(sandbox, tenant.key, [{ resource, parents: ['list:1'], type: 'card.moved', data }]);
  expect(accepted.status).toBe(202);
  if (arrives) {
    await receiver.waitFor(() => receiver.acceptedEvents(path).length > before);
  } else {
    // Long enough for a turn and a delivery here (they take tens of milliseconds).
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(receiver.acceptedEvents(path).length).toBe(before);
  }
}

/** Stores an event without ringing its doorbell: for a test's own distributor turns, which the sandbox's do not take. */
async function storeUnrung(tenantId: string, resource: string, parents: string[], data: number, eventId: string) {
  const { dynamo, eventsTable, config } = sandbox.wiring;
  await ingest(
    {
      queues: new QueueStore({ client: dynamo, tableName: eventsTable, retentionDays: config.retentionDays }),
      idempotency: new IdempotencyStore({
        client: dynamo,
        tableName: eventsTable,
        retentionDays: config.retentionDays,
        ingestGraceMs: 60_000,
      }),
      doorbell: { ring: async () => undefined },
      config,
      metrics: NO_METRICS,
      logger: NO_LOGS,
      now: Date.now,
      newEventId: () => eventId,
    },
    tenantId,
    [{ resource, parents, type: 'a.b', data, idempotencyKey: undefined }],
  );
}

describe('calls observed on every thread', () => {
  it('counts the calls the API makes on its own thread, as those of the functions on this one', async () => {
    const before = counts.calls.dynamodb?.PutItemCommand ?? 0;
    await createTenant(sandbox, 'observed');
    // The tenant, its key: written by the API's thread, reported to this one.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(counts.calls.dynamodb?.PutItemCommand ?? 0).toBeGreaterThanOrEqual(before + 2);
    expect(counts.wru).toBeGreaterThan(0);
  });
});

describe('the by_resource index', () => {
  it('holds what the fan-out reads of a webhook, not its URL, secret or health', async () => {
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'index:1', url: `${receiver.url}/index` });
    // Asked for every attribute, as a reader without a projection would be answered.
    const client = documentClient(sandbox.emulators.dynamo);
    const { Items } = await client.send(
      new QueryCommand({
        TableName: sandboxTableName(CONTROL_TABLE),
        IndexName: BY_RESOURCE_INDEX,
        KeyConditionExpression: 'gsi1pk = :key',
        ExpressionAttributeValues: { ':key': `${tenant.id}#index:1` },
      }),
    );
    expect(Items).toHaveLength(1);
    expect(Object.keys(Items?.[0] ?? {}).sort()).toEqual([
      'gsi1pk',
      'gsi1sk',
      'id',
      'pk',
      'resource',
      'sk',
      'status',
      'tenant_id',
      'types',
    ]);
    expect(Items?.[0]?.id).toBe(hook.id);
  });
});

describe('lookups kept between turns', () => {
  it('looks a resource up once, and sees a webhook created, disabled and deleted afterwards', async () => {
    await createWebhook(sandbox, tenant.key, { resource: 'list:1', url: `${receiver.url}/list` });
    await publishAndWait('card:1', 1, '/list', true);
    const first = lookups();
    await publishAndWait('card:1', 2, '/list', true);
    // The second turn asked DynamoDB nothing about webhooks or streams.
    expect(lookups()).toEqual(first);

    const card = await createWebhook(sandbox, tenant.key, { resource: 'card:1', url: `${receiver.url}/card` });
    await publishAndWait('card:1', 3, '/card', true);

    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${card.id}`, { key: tenant.key, body: { status: 'disabled' } });
    expect(patched.status).toBe(200);
    const beforeDisabled = lookups().webhooks;
    await publishAndWait('card:1', 4, '/card', false);
    // Not held for a webhook the turn still thought active: the turn looked again.
    expect(lookups().webhooks).toBeGreaterThan(beforeDisabled);

    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${card.id}`, { key: tenant.key })).status).toBe(204);
    await publishAndWait('card:1', 5, '/list', true);
    expect(receiver.acceptedEvents('/card').map((e) => e.data)).toEqual([3]);
  });

  it('appends to a stream started after the resource was looked up', async () => {
    await publishAndWait('card:2', 1, '/list', true);
    const start = await call(sandbox, 'GET', '/v1/events?resource=card:2', { key: tenant.key });
    expect([200, 412]).toContain(start.status);
    await publishAndWait('card:2', 2, '/list', true);
    let seen: unknown[] = [];
    for (let i = 0; i < 30 && seen.length === 0; i++) {
      const page = await call(sandbox, 'GET', `/v1/events?resource=card:2&sync=${encodeURIComponent(start.body.sync)}`, {
        key: tenant.key,
      });
      seen = page.body.data ?? [];
      if (seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(seen.map((e) => (e as { data: number }).data)).toEqual([2]);
  });
});

describe('stream state kept between turns', () => {
  it('reads a kept stream expiry again once it has passed, since polls push it out without a bump', async () => {
    const hour = 3_600_000;
    const streams = new StreamStore({
      client: sandbox.wiring.dynamo,
      controlTable: sandbox.wiring.controlTable,
      eventsTable: sandbox.wiring.eventsTable,
      retentionDays: 1 / 24,
    });
    const webhooks = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const cache = new SubscriptionCache({
      client: sandbox.wiring.dynamo,
      controlTable: sandbox.wiring.controlTable,
      lookups: { onResource: (t, r) => webhooks.onResource(t, r), streamExpiry: (t, r) => streams.streamExpiry(t, r) },
      maxAgeMs: 10 * hour,
    });
    const t0 = Date.now();
    await streams.touch(tenant.id, 'doc:kept', t0);
    const version = await cache.version(tenant.id);
    expect(await cache.streamActive(tenant.id, 'doc:kept', version, t0 + hour / 2)).toBe(true);
    // A poll half an hour later extends the stream to t0 + 1.5 h, without a bump.
    await streams.touch(tenant.id, 'doc:kept', t0 + hour / 2);
    expect(await cache.version(tenant.id)).toBe(version);
    expect(await cache.streamActive(tenant.id, 'doc:kept', version, t0 + hour + 1)).toBe(true);
    // Past the extended expiry, with no poll since, the stream is gone.
    expect(await cache.streamActive(tenant.id, 'doc:kept', version, t0 + 2 * hour)).toBe(false);
  });

  it('shares one version read among the turns that ask at the same time, and reads again afterwards', async () => {
    const counted = newCounts();
    const client = documentClient({ ...sandbox.emulators.dynamo });
    instrument(counted, client, 'dynamodb');
    const webhooks = new WebhookStore({ client, tableName: sandbox.wiring.controlTable });
    const cache = new SubscriptionCache({
      client,
      controlTable: sandbox.wiring.controlTable,
      lookups: { onResource: (t, r) => webhooks.onResource(t, r), streamExpiry: async () => undefined },
    });
    const versions = await Promise.all(Array.from({ length: 10 }, () => cache.version(tenant.id)));
    expect(new Set(versions).size).toBe(1);
    expect(counted.calls.dynamodb).toEqual({ GetItemCommand: 1 });
    await cache.version(tenant.id);
    expect(counted.calls.dynamodb).toEqual({ GetItemCommand: 2 });
  });
});

describe('a version read held up in flight', () => {
  it('is not shared with a turn that starts after a change was answered, though it is still waiting for its answer', async () => {
    const client = documentClient({ ...sandbox.emulators.dynamo });
    // The first version read reaches DynamoDB and is answered there, but its answer
    // comes back late (a slow network, or the SDK's retries): `answered` tells when
    // DynamoDB has read it, `release` lets its answer through.
    let answered: () => void = () => undefined;
    const read = new Promise<void>((resolve) => {
      answered = resolve;
    });
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let held = false;
    let looked = 0;
    client.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        const input = args.input as { Key?: unknown };
        if (!held && JSON.stringify(input.Key ?? {}).includes(SUBSCRIPTIONS_SK)) {
          held = true;
          answered();
          await released;
        }
        return result;
      },
      { step: 'deserialize', name: 'holdFirstVersionAnswer' },
    );
    const cache = new SubscriptionCache({
      client,
      controlTable: sandbox.wiring.controlTable,
      lookups: {
        onResource: async () => {
          looked++;
          return [];
        },
        streamExpiry: async () => undefined,
      },
    });

    const early = cache.version(tenant.id);
    await read;
    // A webhook change, answered while that read's answer is still on its way.
    await bumpSubscriptions(sandbox.wiring.dynamo, sandbox.wiring.controlTable, tenant.id);
    const late = await cache.version(tenant.id);
    // The held read answers last, with the version before the change.
    release();
    expect(late).toBe((await early) + 1);

    // What the late read learnt of the bump stands: a lookup made under the new version
    // within the index's settle time is kept only until then (as if the index might still
    // lag), not for a minute.
    const now = Date.now();
    await cache.webhooksOn(tenant.id, 'held:1', late, now);
    await cache.webhooksOn(tenant.id, 'held:1', late, now + INDEX_SETTLE_MS + 1);
    expect(looked).toBe(2);
  });
});

describe('an index that lags behind the write (as DynamoDB global secondary indexes do)', () => {
  it('keeps a lookup made just after a bump only until the index has settled, then looks again', async () => {
    const webhooks = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    // The index answers what it held before the write for its first query: a replica that lags.
    let queries = 0;
    const cache = new SubscriptionCache({
      client: sandbox.wiring.dynamo,
      controlTable: sandbox.wiring.controlTable,
      lookups: {
        onResource: async (t, r) => (queries++ === 0 ? [] : webhooks.onResource(t, r)),
        streamExpiry: async () => undefined,
      },
    });
    const hook = webhookFixture({ tenantId: tenant.id, resource: 'lag:1' });
    await webhooks.put(hook);
    const bumpedBy = Date.now();
    const version = await cache.version(tenant.id);
    expect(await cache.webhooksOn(tenant.id, 'lag:1', version, bumpedBy)).toEqual([]);
    // Within the settle time the lookup is kept; after it, the same version looks again and sees the webhook.
    expect(await cache.webhooksOn(tenant.id, 'lag:1', version, bumpedBy + 1_000)).toEqual([]);
    const later = await cache.webhooksOn(tenant.id, 'lag:1', version, bumpedBy + INDEX_SETTLE_MS + 1);
    expect(later.map((w) => w.id)).toEqual([hook.id]);
    // Settled: kept from then on, for the cache's whole age.
    expect(await cache.webhooksOn(tenant.id, 'lag:1', version, bumpedBy + 30_000)).toBe(later);
    expect(queries).toBe(2);
  });
  it("does not keep a lookup past the index's settle time for a bump whose writer's clock runs ahead", async () => {
    const webhooks = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    let queries = 0;
    const cache = new SubscriptionCache({
      client: sandbox.wiring.dynamo,
      controlTable: sandbox.wiring.controlTable,
      lookups: {
        onResource: async (t, r) => (queries++ === 0 ? [] : webhooks.onResource(t, r)),
        streamExpiry: async () => undefined,
      },
    });
    const hook = webhookFixture({ id: 'wh_0mx2skewzzzzzzzzzzz', tenantId: tenant.id, resource: 'skew:1' });
    await webhooks.put(hook);
    // The bump's writer runs 10 minutes ahead of this reader.
    const now = Date.now();
    await sandbox.wiring.dynamo.send(
      new UpdateCommand({
        TableName: sandbox.wiring.controlTable,
        Key: { pk: `tenant#${tenant.id}`, sk: 'subscriptions' },
        UpdateExpression: 'SET #bumped_at = :ahead',
        ExpressionAttributeNames: { '#bumped_at': 'bumped_at' },
        ExpressionAttributeValues: { ':ahead': now + 600_000 },
      }),
    );
    const version = await cache.version(tenant.id);
    expect(await cache.webhooksOn(tenant.id, 'skew:1', version, now)).toEqual([]);
    // The bump came before this reader read its version: the index has settled 5 s after that.
    const later = await cache.webhooksOn(tenant.id, 'skew:1', version, now + INDEX_SETTLE_MS + 1);
    expect(later.map((w) => w.id)).toEqual([hook.id]);
    // And is not asked again every 5 s while the writer's clock is ahead.
    expect(await cache.webhooksOn(tenant.id, 'skew:1', version, now + 3 * INDEX_SETTLE_MS)).toBe(later);
    expect(queries).toBe(2);
  });
});

describe('a webhook created while its resource is busy and the index lags', () => {
  it('reaches an event published after the 201, though a turn looked its resource up between the write and the index showing it', async () => {
    const store = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    // The by_resource index as a lagging replica answers it: as it was before the write,
    // until the test lets it show the webhook (`shows`). The API's wait and the
    // distributor's lookups read the same index.
    let shows = false;
    let polled: () => void = () => undefined;
    const firstPoll = new Promise<void>((resolve) => {
      polled = resolve;
    });
    const index = async (tenantId: string, resource: string) => {
      if (shows) return store.onResource(tenantId, resource);
      polled();
      return [];
    };
    const lagging = new Proxy(store, {
      get(target, property) {
        if (property === 'onResource') return index;
        const value = Reflect.get(target, property);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const tenants = new TenantStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const webhooks = webhookService(sandbox, { service: { webhooks: lagging, tenants } });
    const cache = new SubscriptionCache({
      client: sandbox.wiring.dynamo,
      controlTable: sandbox.wiring.controlTable,
      lookups: { onResource: index, streamExpiry: async () => undefined },
    });

    const creating = webhooks.create(tenant.id, { resource: 'busy:1', url: `${receiver.url}/busy`, types: ['*'], description: '' });
    // Stored, and its API waiting for the index: a turn of the busy resource looks it up now.
    await firstPoll;
    const during = await cache.version(tenant.id);
    expect(await cache.webhooksOn(tenant.id, 'busy:1', during, Date.now())).toEqual([]);
    shows = true;
    const created = await creating;

    // An event published after the 201: its turn must find the webhook.
    const after = await cache.version(tenant.id);
    const found = await cache.webhooksOn(tenant.id, 'busy:1', after, Date.now());
    expect(found.map((w) => w.id)).toEqual([created.id]);
  });
});

describe('lookups near the end of their age', () => {
  /** A cache whose webhook lookups are counted, and wait for `gate` once it is set. */
  function gatedCache(options: { refreshWaitMs?: number } = {}) {
    const webhooks = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const state: { queries: number; gate?: Promise<void>; fail?: boolean } = { queries: 0 };
    const cache = new SubscriptionCache({
      client: sandbox.wiring.dynamo,
      controlTable: sandbox.wiring.controlTable,
      lookups: {
        onResource: async (t, r) => {
          state.queries++;
          await state.gate;
          if (state.fail) throw new Error('ProvisionedThroughputExceededException');
          return webhooks.onResource(t, r);
        },
        streamExpiry: async () => undefined,
      },
      ...options,
    });
    return { cache, webhooks, state };
  }
  /** Whether a promise is still pending after the emulators have had time to answer. */
  async function pending(promise: Promise<unknown>): Promise<boolean> {
    const waiting = Symbol('pending');
    return (await Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve(waiting), 200))])) === waiting;
  }

  it('answers from the entry without waiting, looks again behind the turn, and keeps the new answer for a whole age', async () => {
    const { cache, webhooks, state } = gatedCache();
    const first = webhookFixture({ id: 'wh_0mx3aheadzzzzzzzzz1', tenantId: tenant.id, resource: 'ahead:1' });
    await webhooks.put(first);
    const version = await cache.version(tenant.id);
    // Well after any bump of this tenant, so the lookup is kept for the whole age (60 s).
    const t0 = Date.now() + 120_000;
    const kept = cache.webhooksOn(tenant.id, 'ahead:1', version, t0);
    expect((await kept).map((w) => w.id)).toEqual([first.id]);
    // A second webhook whose writer died before its bump: only a fresh lookup finds it.
    const second = webhookFixture({ id: 'wh_0mx3aheadzzzzzzzzz2', tenantId: tenant.id, resource: 'ahead:1' });
    await webhooks.put(second);
    expect(await cache.webhooksOn(tenant.id, 'ahead:1', version, t0 + 30_000)).toBe(await kept);
    expect(state.queries).toBe(1);

    // In the last REFRESH_AHEAD_MS of its age: the kept answer at once, while the lookup made again waits.
    let open = () => {};
    state.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const late = t0 + 60_000 - REFRESH_AHEAD_MS + 1;
    const answer = cache.webhooksOn(tenant.id, 'ahead:1', version, late);
    expect(await pending(answer)).toBe(false);
    expect(await answer).toBe(await kept);
    // One lookup behind the turns, however many use the entry meanwhile.
    await cache.webhooksOn(tenant.id, 'ahead:1', version, late + 1_000);
    expect(state.queries).toBe(2);
    const refreshed = cache.refreshed();
    expect(await pending(refreshed)).toBe(true);
    open();
    await refreshed;

    // Past the first lookup's age: the new answer, kept for a whole age from the second lookup.
    const renewed = await cache.webhooksOn(tenant.id, 'ahead:1', version, t0 + 60_000 + 1);
    expect(renewed.map((w) => w.id).sort()).toEqual([first.id, second.id]);
    expect(await cache.webhooksOn(tenant.id, 'ahead:1', version, late + 40_000)).toBe(renewed);
    expect(state.queries).toBe(2);
  });

  it('keeps the answer of a newer version over a refresh that ends after it, and an entry whose refresh failed until it ages out', async () => {
    const { cache, state } = gatedCache();
    const version = await cache.version(tenant.id);
    const t0 = Date.now() + 120_000;
    await cache.webhooksOn(tenant.id, 'ahead:2', version, t0);
    let open = () => {};
    state.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const late = t0 + 60_000 - REFRESH_AHEAD_MS + 1;
    await cache.webhooksOn(tenant.id, 'ahead:2', version, late);
    // A bump: the next turn looks up under the new version while the refresh of the old one waits.
    const newer = cache.webhooksOn(tenant.id, 'ahead:2', version + 1, late + 1);
    open();
    await cache.refreshed();
    const answer = await newer;
    expect(await cache.webhooksOn(tenant.id, 'ahead:2', version + 1, late + 2)).toBe(answer);
    expect(state.queries).toBe(3);

    // A refresh that fails leaves the entry as it was, and asks nothing more until it ages out.
    state.gate = undefined;
    state.fail = true;
    const failingLate = late + 1 + 60_000 - REFRESH_AHEAD_MS + 1;
    expect(await cache.webhooksOn(tenant.id, 'ahead:2', version + 1, failingLate)).toBe(answer);
    await cache.refreshed();
    expect(await cache.webhooksOn(tenant.id, 'ahead:2', version + 1, failingLate + 1_000)).toBe(answer);
    expect(state.queries).toBe(4);
    state.fail = false;
    const aged = await cache.webhooksOn(tenant.id, 'ahead:2', version + 1, late + 1 + 60_000);
    expect(aged).not.toBe(answer);
    expect(state.queries).toBe(5);
  });

  it('waits only for the lookups under way when asked, not for those started later (by turns of another invocation sharing the container)', async () => {
    const { cache, state } = gatedCache();
    const version = await cache.version(tenant.id);
    const t0 = Date.now() + 120_000;
    await cache.webhooksOn(tenant.id, 'ahead:4', version, t0);
    await cache.webhooksOn(tenant.id, 'ahead:5', version, t0);
    const late = t0 + 60_000 - REFRESH_AHEAD_MS + 1;
    // This invocation's turn has its lookup made again, and the invocation waits for it.
    let openOwn = () => {};
    state.gate = new Promise<void>((resolve) => {
      openOwn = resolve;
    });
    await cache.webhooksOn(tenant.id, 'ahead:4', version, late);
    const ownRefreshed = cache.refreshed();
    // Meanwhile another invocation's turn starts a lookup that takes long (a throttled index).
    let openOther = () => {};
    state.gate = new Promise<void>((resolve) => {
      openOther = resolve;
    });
    await cache.webhooksOn(tenant.id, 'ahead:5', version, late);
    openOwn();
    expect(await pending(ownRefreshed)).toBe(false);
    const otherRefreshed = cache.refreshed();
    expect(await pending(otherRefreshed)).toBe(true);
    openOther();
    await otherRefreshed;
    expect(state.queries).toBe(4);
  });

  it('stops waiting for a lookup that hangs after refreshWaitMs: the entry is still good until it ages out', async () => {
    const { cache, state } = gatedCache({ refreshWaitMs: 50 });
    const version = await cache.version(tenant.id);
    const t0 = Date.now() + 120_000;
    const kept = await cache.webhooksOn(tenant.id, 'ahead:6', version, t0);
    // A lookup that never answers, as a request without a timeout to a throttled index.
    state.gate = new Promise<void>(() => {});
    const late = t0 + 60_000 - REFRESH_AHEAD_MS + 1;
    expect(await cache.webhooksOn(tenant.id, 'ahead:6', version, late)).toBe(kept);
    expect(await pending(cache.refreshed())).toBe(false);
    expect(await cache.webhooksOn(tenant.id, 'ahead:6', version, late + 1_000)).toBe(kept);
    expect(state.queries).toBe(2);
  });

  it('does not wait again, in later invocations, for a lookup that hung in an earlier one', async () => {
    const { cache, state } = gatedCache({ refreshWaitMs: 1_000 });
    const version = await cache.version(tenant.id);
    const t0 = Date.now() + 120_000;
    await cache.webhooksOn(tenant.id, 'ahead:7', version, t0);
    // A lookup that never answers (a request without a timeout whose socket died, or one
    // frozen halfway with its container): the invocation that started it waits refreshWaitMs.
    state.gate = new Promise<void>(() => {});
    await cache.webhooksOn(tenant.id, 'ahead:7', version, t0 + 60_000 - REFRESH_AHEAD_MS + 1);
    await cache.refreshed();
    // The next invocations of the container start no lookup behind their turns: they return at once.
    expect(await pending(cache.refreshed())).toBe(false);
    expect(await pending(cache.refreshed())).toBe(false);
  });

  it("ends the distributor's invocation only once the lookups made behind its turns are done, its turns ended before", async () => {
    // A client whose webhook queries wait for a gate while one is set, as a slow index would.
    let gate: Promise<void> | undefined;
    let open = () => {};
    const gated = documentClient(sandbox.emulators.dynamo);
    gated.middlewareStack.add(
      (next) => async (args) => {
        if ((args.input as { IndexName?: string }).IndexName === 'by_resource') await gate;
        return next(args);
      },
      { step: 'initialize', name: 'slowIndex' },
    );
    const { dynamo, eventsTable, config } = sandbox.wiring;
    const queues = new QueueStore({ client: dynamo, tableName: eventsTable, retentionDays: config.retentionDays });
    const k = { tenantId: tenant.id, resource: 'ahead:3' };
    const store = (n: number) => storeUnrung(tenant.id, k.resource, [], n, `evt_ahead${n}`);
    // Well after any bump of this tenant, so the first turn's lookups are kept for the whole age.
    let clock = Date.now() + 120_000;
    const handler = makeDistributorHandler(distributor({ ...sandbox.wiring, dynamo: gated, now: () => clock }), NO_LOGS);
    const doorbell = {
      Records: [
        { messageId: 'm1', body: JSON.stringify({ tenant: k.tenantId, resource: k.resource }), attributes: { MessageGroupId: 'g' } },
      ],
    } as unknown as SQSEvent;
    await store(1);
    await handler(doorbell, {} as Context);

    // Near the end of the lookups' age, the next turn uses them and has them made again behind it.
    await store(2);
    clock += 60_000 - REFRESH_AHEAD_MS + 1_000;
    gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const invocation = handler(doorbell, {} as Context);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await queues.readMeta(k)).toMatchObject({ depth: 0, scheduled: false });
    expect(await pending(invocation)).toBe(true);
    open();
    expect((await invocation).batchItemFailures).toEqual([]);
  });
});

describe("the distributor's reads of the control table", () => {
  it('each name their attributes, all of them among those its role may read, never the signing secrets', async () => {
    const t = await createTenant(sandbox, 'projected');
    await createWebhook(sandbox, t.key, { resource: 'proj:0', url: `${receiver.url}/projected` });
    await call(sandbox, 'GET', '/v1/events?resource=proj:1', { key: t.key });
    const other = await createTenant(sandbox, 'projected-switch');
    const paused = await call(sandbox, 'PUT', '/v1/admin/switches', {
      key: sandbox.adminKey,
      body: { scope: 'tenant', tenant: other.id, action: 'pause' },
    });
    // An event stored without a doorbell, for this distributor's turn alone.
    const k = { tenantId: t.id, resource: 'proj:1' };
    await storeUnrung(t.id, k.resource, ['proj:0'], 1, 'evt_projected');
    const reads: Array<{ input: Record<string, unknown>; output: Record<string, unknown> }> = [];
    const watched = documentClient(sandbox.emulators.dynamo);
    watched.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        const input = args.input as Record<string, unknown>;
        if (input.TableName === sandbox.wiring.controlTable) reads.push({ input, output: result.output as Record<string, unknown> });
        return result;
      },
      { step: 'initialize', name: 'recordControlReads' },
    );
    const turn = distributor({ ...sandbox.wiring, dynamo: watched, sqs: sandbox.wiring.sqs });
    expect(await turn.runTurn(k, 'projected')).toMatchObject({ distributed: 1 });
    await call(sandbox, 'DELETE', `/v1/admin/switches/${paused.body.id}`, { key: sandbox.adminKey });

    // The webhooks on the resource and its parent, the subscriptions version, the stream and the switches.
    expect(reads.some((r) => r.input.IndexName === 'by_resource')).toBe(true);
    expect(reads.some((r) => String((r.input.Key as { pk?: string })?.pk).startsWith('stream#'))).toBe(true);
    expect(reads.some((r) => (r.input.Key as { sk?: string })?.sk === 'subscriptions')).toBe(true);
    expect(reads.some((r) => String((r.input.ExpressionAttributeValues as Record<string, string>)?.[':pk']) === 'switches')).toBe(true);
    const allowed = new Set<string>(DISTRIBUTOR_CONTROL_ATTRIBUTES);
    for (const { input, output } of reads) {
      expect(input.ProjectionExpression, JSON.stringify(input)).toBeDefined();
      const named = Object.values((input.ExpressionAttributeNames ?? {}) as Record<string, string>);
      for (const name of named) expect(allowed.has(name), `${name} in ${JSON.stringify(input)}`).toBe(true);
      expect(JSON.stringify(output)).not.toContain('whsec_');
    }
  });
});

describe('a subscriptions version that cannot be bumped', () => {
  it('does not fail the webhook write it follows (cached lookups age out within a minute)', async () => {
    // A client whose bumps fail, as DynamoDB erring on that one write would.
    const failing = documentClient(sandbox.emulators.dynamo);
    failing.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { Key?: { sk?: string } };
        if (input.Key?.sk === 'subscriptions') throw new Error('InternalServerError');
        return next(args);
      },
      { step: 'initialize', name: 'failBumps' },
    );
    const store = new WebhookStore({ client: failing, tableName: sandbox.wiring.controlTable });
    const hook = webhookFixture({ id: 'wh_0mx2zzzzzzzzzzzzzzz', tenantId: tenant.id, resource: 'bump:1' });
    await store.put(hook);
    expect((await store.get(tenant.id, hook.id))?.url).toBe(hook.url);
    expect(await store.delete(tenant.id, hook.id)).toBeTruthy();
    expect(await store.get(tenant.id, hook.id)).toBeUndefined();
  });
});
