/**
 * Event streams (SPEC §3): start and resync with 412, pages of at most 100 with
 * has_more, events on descendants, the same events and seqs as webhooks, tokens
 * that are useless to another tenant or once tampered with, and expiry.
 */
import { describe, expect, it } from 'vitest';
import { StreamStore } from '../../functions/adapters/stream-store.ts';
import { encodeSyncToken, positionAt } from '../../functions/core/stream-token.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
let tenant: { id: string; key: string };
let streams: StreamStore;

withSandbox({ canary: false }, async (s, r) => {
  [sandbox, receiver] = [s, r];
  tenant = await createTenant(sandbox, 'streamer');
  streams = new StreamStore({
    client: sandbox.wiring.dynamo,
    controlTable: sandbox.wiring.controlTable,
    eventsTable: sandbox.wiring.eventsTable,
    retentionDays: 7,
  });
});

const poll = (resource: string, sync?: string, key = tenant.key) =>
  call(
    sandbox,
    'GET',
    `/v1/events?resource=${encodeURIComponent(resource)}${sync === undefined ? '' : `&sync=${encodeURIComponent(sync)}`}`,
    { key },
  );

/** Polls until `count` events have been read (the newest 2 s settle before they are served). */
async function drain(resource: string, sync: string, count: number) {
  const events: Array<{ id: string; seq: number; resource: string; type: string }> = [];
  let token = sync;
  const pages: number[] = [];
  // What the API function hands Lambda for each page: its body as a JSON string, escaped again.
  const responseBytes: number[] = [];
  for (let i = 0; i < 100 && events.length < count; i++) {
    const page = await poll(resource, token);
    expect(page.status).toBe(200);
    events.push(...page.body.data);
    if (page.body.data.length > 0) pages.push(page.body.data.length);
    responseBytes.push(Buffer.byteLength(JSON.stringify({ statusCode: 200, body: JSON.stringify(page.body) })));
    token = page.body.sync;
    if (!page.body.has_more) await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return { events, token, pages, responseBytes };
}

describe('event streams', () => {
  it('starts with 412 and a token, then serves what happened since, including descendants, in pages of 100', async () => {
    const start = await poll('project:1');
    expect(start.status).toBe(412);
    expect(start.body).toMatchObject({ sync: expect.any(String), error: { code: 'invalid_request', message: expect.any(String) } });

    const distributed = sandbox.metrics.total('EventsDistributed');
    await publish(sandbox, tenant.key, [{ resource: 'project:1', type: 'project.renamed', data: 'p' }]);
    for (let r = 0; r < 3; r++) {
      await publish(
        sandbox,
        tenant.key,
        Array.from({ length: 50 }, (_, i) => ({ resource: `task:${r}`, parents: ['project:1'], type: 'task.changed', data: i })),
      );
    }
    await publish(sandbox, tenant.key, [{ resource: 'elsewhere:1', type: 'x.y', data: 'not ours' }]);
    // Let everything be distributed (appended to the streams first), then settle: a page
    // stops 3 s short of now. A fixed 3 s from the publish cut the first page short on a
    // busy machine, where the distributor took a moment more.
    await receiver.waitFor(() => sandbox.metrics.total('EventsDistributed') >= distributed + 152, 20_000);
    await new Promise((resolve) => setTimeout(resolve, 3_100));

    const { events, pages } = await drain('project:1', start.body.sync, 151);
    expect(events).toHaveLength(151);
    expect(pages[0]).toBe(100);
    expect(events.some((e) => e.resource === 'elsewhere:1')).toBe(false);
    for (const r of [0, 1, 2]) {
      expect(events.filter((e) => e.resource === `task:${r}`).map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    }
    expect(new Set(events.map((e) => e.id)).size).toBe(151);
  });

  it('serves every event of a page DynamoDB cuts short (1 MB a read): large events are not skipped', async () => {
    const start = await poll('big:0');
    const big = 'x'.repeat(60_000);
    for (let r = 0; r < 2; r++) {
      await publish(
        sandbox,
        tenant.key,
        Array.from({ length: 15 }, (_, i) => ({ resource: `big:${r + 1}`, parents: ['big:0'], type: 'big.one', data: { i, big } })),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const { events } = await drain('big:0', start.body.sync, 30);
    expect(events).toHaveLength(30);
    expect(new Set(events.map((e) => e.id)).size).toBe(30);
  });

  it("keeps a page of 100 of the largest events within Lambda's 6 MB response, in pages that say has_more", async () => {
    const start = await poll('huge:0');
    // 64 KiB serialized, the most an event's data may be, and all quotes: each is escaped
    // once in the page and again in the Lambda response that carries it, the worst case.
    const data = '"'.repeat(32_767);
    expect(Buffer.byteLength(JSON.stringify(data))).toBe(64 * 1024);
    // 1 MiB a request: 15 such events at most.
    for (const [r, count] of [15, 15, 15, 15, 15, 15, 10].entries()) {
      await publish(
        sandbox,
        tenant.key,
        Array.from({ length: count }, () => ({ resource: `huge:${r + 1}`, parents: ['huge:0'], type: 'huge.one', data })),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const { events, pages, responseBytes } = await drain('huge:0', start.body.sync, 100);
    expect(new Set(events.map((e) => e.id)).size).toBe(100);
    // A page of 100 would be some 6.6 MB of body and 13 MB as Lambda's response: API
    // Gateway would answer 502 in AWS only. DynamoDB's 1 MB a query cuts it short.
    expect(pages.length).toBeGreaterThan(1);
    expect(Math.max(...responseBytes)).toBeLessThan(6_000_000);
  });

  it("gives a stream on a parent the gap marker of its child's dropped events", async () => {
    const start = await poll('family:0');
    const admin = { key: sandbox.adminKey };
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin,
      body: { scope: 'resource', tenant: tenant.id, target: 'kid:1', action: 'drop', reason: 'test' },
    });
    // Every stage's switch cache (5 s) has seen it.
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    const dropped = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    await publish(
      sandbox,
      tenant.key,
      [1, 2].map((n) => ({ resource: 'kid:1', parents: ['family:0'], type: 'kid.did', data: n })),
    );
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) === dropped + 2, 10_000);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin);
    const { events } = await drain('family:0', start.body.sync, 1);
    expect(events).toMatchObject([{ type: 'sluice.gap', resource: 'kid:1', data: { dropped: 2, reason: 'switch_drop' } }]);
  });

  it('answers a token a little ahead of the clock (another instance set it) with an empty page, not an error', async () => {
    await poll('ahead:1');
    const key = await streams.tokenKey();
    const ahead = encodeSyncToken(key, {
      tenantId: tenant.id,
      resource: 'ahead:1',
      position: positionAt(Date.now() + 500),
      issuedAt: Date.now(),
    });
    const page = await poll('ahead:1', ahead);
    expect(page.status).toBe(200);
    expect(page.body).toMatchObject({ data: [], has_more: false });
  });

  it('sees the same event objects, with the same seq, as a webhook on the same resource', async () => {
    await createWebhook(sandbox, tenant.key, { resource: 'board:7', url: `${receiver.url}/board` });
    const start = await poll('board:7');
    await publish(
      sandbox,
      tenant.key,
      [1, 2, 3].map((n) => ({ resource: 'card:7', parents: ['board:7'], type: 'card.moved', data: n })),
    );
    await receiver.waitFor(() => receiver.events('/board').length === 3);
    const { events } = await drain('board:7', start.body.sync, 3);
    expect(events).toEqual(receiver.events('/board'));
  });

  it('refuses another tenant’s token, a tampered token and one older than the retention period, each with a fresh one', async () => {
    const other = await createTenant(sandbox, 'other');
    const mine = (await poll('secret:1')).body.sync as string;
    const stolen = await poll('secret:1', mine, other.key);
    expect(stolen.status).toBe(412);
    expect(stolen.body.sync).not.toBe(mine);

    const [payload, mac] = mine.split('.');
    const tampered = `${Buffer.from(
      Buffer.from(payload as string, 'base64url')
        .toString()
        .replace('secret:1', 'secret:2'),
    ).toString('base64url')}.${mac}`;
    expect((await poll('secret:2', tampered)).status).toBe(412);
    expect((await poll('secret:1', 'garbage')).status).toBe(412);
    // Valid for the whole retention period: a token six days old still works …
    const key = await streams.tokenKey();
    const sixDays = encodeSyncToken(key, {
      tenantId: tenant.id,
      resource: 'secret:1',
      position: positionAt(Date.now() - 6 * 86_400_000),
      issuedAt: Date.now(),
    });
    expect((await poll('secret:1', sixDays)).status).toBe(200);
    // … eight days is too old.
    const eightDays = encodeSyncToken(key, {
      tenantId: tenant.id,
      resource: 'secret:1',
      position: positionAt(Date.now() - 8 * 86_400_000),
      issuedAt: Date.now(),
    });
    expect((await poll('secret:1', eightDays)).status).toBe(412);
  });

  it('expires a stream nobody polled for the retention period: it stops collecting and asks to resync', async () => {
    const start = await poll('idle:1');
    // Nobody polled for eight days.
    await streams.touch(tenant.id, 'idle:1', Date.now() - 8 * 86_400_000);
    await publish(sandbox, tenant.key, [{ resource: 'idle:1', type: 'a.b', data: 'missed' }]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const after = await poll('idle:1', start.body.sync);
    expect(after.status).toBe(412);
  });

  it('starts no stream for a HEAD, which HTTP says changes nothing', async () => {
    // API Gateway's ANY method hands HEAD to the Lambda, and Hono runs a GET route for it.
    const head = await call(sandbox, 'HEAD', '/v1/events?resource=head:1', { key: tenant.key });
    expect(head.status).toBe(404);
    expect(await streams.streamExpiry(tenant.id, 'head:1')).toBeUndefined();
    // A GET still starts one.
    expect((await poll('head:1')).status).toBe(412);
    expect(await streams.streamExpiry(tenant.id, 'head:1')).toBeGreaterThan(Date.now());
    // A load balancer's HEAD on the health check is still answered.
    expect((await call(sandbox, 'HEAD', '/v1/health')).status).toBe(200);
    // Without a valid key, API Gateway's authorizer refuses a HEAD before anything else.
    expect((await call(sandbox, 'HEAD', '/v1/events?resource=head:1')).status).toBe(401);
    expect((await call(sandbox, 'HEAD', '/v1/nothing-here', { key: 'sk_not_a_key' })).status).toBe(401);
    expect((await call(sandbox, 'HEAD', '/v1/nothing-here', { key: tenant.key })).status).toBe(404);
  });

  it('needs a valid resource', async () => {
    expect((await call(sandbox, 'GET', '/v1/events', { key: tenant.key })).status).toBe(400);
    expect((await poll('bad resource')).status).toBe(400);
  });
});
