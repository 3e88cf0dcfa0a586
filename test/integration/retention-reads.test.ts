/**
 * What a tenant reads of a webhook's past keeps to the retention period (SPEC §4: events,
 * dead letters and attempts 7 days), though DynamoDB's TTL deletes late and the sandbox's
 * emulator never does (SPEC §2: reads ignore items whose expiry has passed): an attempt,
 * a logged delivery or a dead letter written more than 7 days ago is neither listed nor
 * sent again, beside one written now that is.
 */
import { randomBytes } from 'node:crypto';
import { DeleteCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { DeadLetters } from '../../functions/adapters/dead-letters.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import { newId } from '../../functions/core/ids.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
import type { CallObserver } from '../../sandbox/observe.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { webhookService } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;

/** What a test watches of the sandbox's calls to DynamoDB, while it is set. */
let observe: CallObserver | undefined;

withSandbox({ canary: false, onCall: (call) => observe?.(call) }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const DAY_MS = 86_400_000;

describe('reads of a webhook past the retention period', () => {
  it("leave out the attempts, logged deliveries and dead letters written over 7 days ago, which DynamoDB's TTL has not deleted yet", async () => {
    // Prepare: a webhook with one of each written 8 days ago (expired a day ago, still
    // stored), and one of each written now.
    const tenant = await createTenant(sandbox, 'retention-reads');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'kept:0', url: `${receiver.url}/retention-reads` });
    const stores = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const now = Date.now();
    const old = now - 8 * DAY_MS;
    for (const [name, at] of [
      ['old', old],
      ['new', now],
    ] as const) {
      const event = deliveredEventFixture({
        id: `evt_retention${name}`,
        seq: name === 'old' ? 1 : 2,
        resource: 'kept:1',
        parents: ['kept:0'],
        created_at: new Date(at).toISOString(),
      });
      const message: DeliveryMessage = { deliveryId: `msg_${name}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 };
      const attempt = (n: number) => ({
        id: `att_${name}${n}`,
        delivery_id: message.deliveryId,
        attempt: n,
        status_code: 500,
        duration_ms: 1,
        error: 'HTTP 500',
        at: new Date(at + n).toISOString(),
      });
      await stores.deliveryLog.add(message, at, attempt(1));
      await stores.deliveryLog.recordAttempt(hook.id, attempt(2), at + 2);
      expect(await stores.deadLetters.add({ ...message, deliveryId: `msg_${name}dead`, attempt: 8 }, 'HTTP 500', at + 3)).toBe(true);
    }

    // Act: read the attempts and the dead letters, and replay the whole 9 days.
    const attempts = await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/attempts`, { key: tenant.key });
    const deadLetters = await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/dead-letters`, { key: tenant.key });
    const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/replay`, {
      key: tenant.key,
      body: { since: new Date(now - 9 * DAY_MS).toISOString() },
    });

    // Assert: only what was written now (the ping's attempt, not logged, aside).
    expect(attempts.status).toBe(200);
    expect(attempts.body.data.map((a: { id: string }) => a.id)).toEqual(['att_new2', 'att_new1']);
    expect(deadLetters.status).toBe(200);
    expect(deadLetters.body.data.map((d: { delivery_id: string }) => d.delivery_id)).toEqual(['msg_newdead']);
    expect(replay.status).toBe(202);
    expect(replay.body).toEqual({ events: 1 });
    await receiver.waitFor(() => receiver.acceptedEvents('/retention-reads').some((e) => e.id === 'evt_retentionnew'));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(
      receiver
        .acceptedEvents('/retention-reads')
        .filter((e) => e.type === 'a.b')
        .map((e) => e.id),
    ).toEqual(['evt_retentionnew']);
  });
});

describe("reads of a webhook's log while DynamoDB's TTL lags behind", () => {
  it('read only the retention period of it: the attempts list and a replay of a window back past it do not page through what expired', async () => {
    // Prepare: 400 deliveries logged 8 days ago (expired a day ago, still stored, as TTL
    // leaves them for days), each with 40 KB of events that do not compress: some 16 MB,
    // sixteen of DynamoDB's 1 MB pages; and one logged now.
    const tenant = await createTenant(sandbox, 'retention-lag');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'lag:0', url: `${receiver.url}/retention-lag` });
    const stores = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const now = Date.now();
    const logged = (name: string, at: number, data: string) => {
      const event = deliveredEventFixture({
        id: `evt_lag${name}`,
        seq: 1,
        resource: 'lag:0',
        data,
        created_at: new Date(at).toISOString(),
      });
      const message: DeliveryMessage = {
        deliveryId: `msg_lag${name}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [event],
        attempt: 1,
      };
      const attempt = {
        id: `att_lag${name}`,
        delivery_id: message.deliveryId,
        attempt: 1,
        status_code: 200,
        duration_ms: 1,
        error: null,
        at: new Date(at).toISOString(),
      };
      return stores.deliveryLog.add(message, at, attempt);
    };
    for (let n = 0; n < 400; n += 40) {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => logged(`old${n + i}`, now - 8 * DAY_MS + n + i, randomBytes(30_000).toString('base64'))),
      );
    }
    await logged('new', now, 'x');
    // What the API reads of the webhook's log: each query of its partition is a page.
    let pages = 0;
    const logPartition = `deliveries#${hook.id}`;
    observe = (call) => {
      // A query's native input names the partition it reads.
      if (call.command === 'QueryCommand' && JSON.stringify(call.input).includes(`"${logPartition}"`)) pages++;
    };
    try {
      // Act
      const attempts = await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/attempts`, { key: tenant.key });
      const attemptPages = pages;
      const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/replay`, {
        key: tenant.key,
        body: { since: new Date(now - 9 * DAY_MS).toISOString() },
      });
      const replayPages = pages - attemptPages;

      // Assert: what was logged now, read in a page each.
      expect(attempts.status).toBe(200);
      expect(attempts.body.data.map((a: { id: string }) => a.id)).toContain('att_lagnew');
      expect(replay.status).toBe(202);
      expect(replay.body).toEqual({ events: 1 });
      expect([attemptPages, replayPages]).toEqual([1, 1]);
    } finally {
      observe = undefined;
    }
  });
});

describe("a webhook's dead letters while DynamoDB's TTL lags behind", () => {
  /**
   * A webhook with 400 dead letters written 8 days ago (expired a day ago, still stored),
   * each with 40 KB of events that do not compress: some 16 MB, sixteen of DynamoDB's
   * 1 MB pages. Among them, keyed by its events' accepted time as they are, one a
   * replay's delivery failed again with just now; and one written now. Returns the
   * webhook, its tenant's key and the two live letters' ids, oldest first.
   */
  async function lettersPastRetention(name: string) {
    const tenant = await createTenant(sandbox, name);
    const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
    const { deadLetters } = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const now = Date.now();
    const old = now - 8 * DAY_MS;
    const letter = (acceptedAt: number, data: string, replayedAt?: number): DeliveryMessage => ({
      deliveryId: newId('msg', acceptedAt),
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [
        deliveredEventFixture({
          id: newId('evt', acceptedAt),
          seq: 1,
          resource: `${name}:0`,
          data,
          created_at: new Date(acceptedAt).toISOString(),
        }),
      ],
      attempt: 8,
      ...(replayedAt !== undefined && { replayedAt }),
    });
    for (let n = 0; n < 400; n += 40) {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          deadLetters.add(letter(old + n + i, randomBytes(30_000).toString('base64')), 'HTTP 500', old + n + i + 1),
        ),
      );
    }
    const failedAgain = letter(old + 200, 'again', now);
    const latest = letter(now, 'latest');
    expect(await deadLetters.add(failedAgain, 'HTTP 500', now)).toBe(true);
    expect(await deadLetters.add(latest, 'HTTP 500', now)).toBe(true);
    return { tenant, hook, live: [failedAgain.deliveryId, latest.deliveryId] };
  }

  /** Counts the queries of `hook`'s dead letters while `act` runs, and each call's. */
  async function queriesOf<T>(hook: { id: string }, act: () => Promise<T>): Promise<{ result: T; queries: number }> {
    let queries = 0;
    const partition = `dead#${hook.id}`;
    observe = (call) => {
      if (call.command === 'QueryCommand' && JSON.stringify(call.input).includes(`"${partition}"`)) queries++;
    };
    try {
      return { result: await act(), queries };
    } finally {
      observe = undefined;
    }
  }

  it('are listed a bounded stretch a page: pages past the expired ones come short or empty, with next, until the live ones', async () => {
    // Prepare
    const { tenant, hook, live } = await lettersPastRetention('dead-lag');
    const path = `/v1/webhooks/${hook.id}/dead-letters`;

    // Act: follow next to the end.
    const pages: Array<{ ids: string[]; queries: number }> = [];
    let after: string | undefined;
    do {
      const { result: page, queries } = await queriesOf(hook, () =>
        call(sandbox, 'GET', `${path}?limit=100${after === undefined ? '' : `&after=${after}`}`, { key: tenant.key }),
      );
      expect(page.status).toBe(200);
      pages.push({ ids: page.body.data.map((l: { delivery_id: string }) => l.delivery_id), queries });
      after = page.body.has_more ? page.body.next : undefined;
    } while (after !== undefined && pages.length < 20);

    // Assert: the two live letters, once, in order; no page read past some 5 MB of
    // expired ones (one query page past DEAD_LETTER_EXPIRED_BYTES), where the first read all 16.
    expect(Math.max(...pages.map((p) => p.queries))).toBeLessThanOrEqual(6);
    expect(pages.flatMap((p) => p.ids)).toEqual(live);
    expect(pages.length).toBeGreaterThan(1);
  });

  it('are sent again by replays that each read a bounded stretch and remove the expired letters they passed', async () => {
    // Prepare
    const { tenant, hook, live } = await lettersPastRetention('dead-lag-replay');
    const path = `/v1/webhooks/${hook.id}/dead-letters/replay`;

    // Act: replay until nothing is left.
    const calls: Array<{ deliveries: number; queries: number }> = [];
    let more = true;
    while (more && calls.length < 20) {
      const { result: replay, queries } = await queriesOf(hook, () => call(sandbox, 'POST', path, { key: tenant.key }));
      expect(replay.status).toBe(202);
      calls.push({ deliveries: replay.body.deliveries, queries });
      more = replay.body.has_more;
    }
    await receiver.waitFor(() => receiver.acceptedEvents('/dead-lag-replay').length === 2, 10_000);

    // Assert: the two live letters sent, each once; no replay read past some 5 MB of
    // expired letters; and none is left, expired or not.
    expect(Math.max(...calls.map((c) => c.queries))).toBeLessThanOrEqual(6);
    expect(calls.reduce((sum, c) => sum + c.deliveries, 0)).toBe(2);
    expect(calls.length).toBeGreaterThan(1);
    expect(receiver.deliveries('/dead-lag-replay').map((d) => [d.answered, d.headers['webhook-id']])).toEqual(live.map((id) => [200, id]));
    const { deadLetters } = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const left = await deadLetters.page(hook.id, 0, 1_000);
    expect(left.letters).toEqual([]);
  });
});

describe('a dead-letter replay whose removal of expired letters fails', () => {
  it('answers what it sent all the same (not a 500 over deliveries already sent), leaving the expired letters for the next', async () => {
    // Prepare: three letters past the retention period, then one live; DynamoDB fails
    // every removal of an expired one (after the SDK's own retries).
    const tenant = await createTenant(sandbox, 'dead-lag-fails');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dlf:0', url: `${receiver.url}/dead-lag-fails` });
    const now = Date.now();
    const letter = (acceptedAt: number): DeliveryMessage => ({
      deliveryId: newId('msg', acceptedAt),
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [
        deliveredEventFixture({ id: newId('evt', acceptedAt), seq: 1, resource: 'dlf:0', created_at: new Date(acceptedAt).toISOString() }),
      ],
      attempt: 8,
    });
    const dynamo = sandbox.wiring.dynamo;
    const stores = { client: dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 };
    for (const at of [now - 8 * DAY_MS, now - 8 * DAY_MS + 1, now - 8 * DAY_MS + 2, now]) {
      expect(await new DeadLetters(stores).add(letter(at), 'HTTP 500', at)).toBe(true);
    }
    const failingExpiredRemovals = {
      send: (command: unknown) =>
        command instanceof DeleteCommand && String(command.input.ConditionExpression).includes('expires_at_ms')
          ? Promise.reject(new Error('ProvisionedThroughputExceededException'))
          : dynamo.send(command as never),
    } as typeof dynamo;
    const sent: DeliverQueueMessage[] = [];
    const service = webhookService(sandbox, {
      delivery: {
        deadLetters: new DeadLetters({ ...stores, client: failingExpiredRemovals }),
        queue: { send: async (messages: readonly DeliverQueueMessage[]) => void sent.push(...messages) },
      },
    });

    // Act
    const replay = await service.replayDeadLetters(tenant.id, hook.id);

    // Assert: the live letter sent and removed; the expired ones still stored.
    expect(replay).toEqual({ deliveries: 1, events: 1, has_more: false });
    expect(sent).toHaveLength(1);
    const left = await new DeadLetters(stores).page(hook.id, 0, 100);
    expect(left.letters).toHaveLength(3);
  });
});
