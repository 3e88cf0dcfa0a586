/**
 * The canary's setup survives a run that fails halfway: the next run goes on with
 * the tenant the first one made, instead of making another (and its usage plan).
 * Its tenant's API key is kept apart from the item the public receiver reads.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteCommand, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { TableCanaryKey } from '../../functions/adapters/canary-key.ts';
import { CanaryStore, hasWebhook } from '../../functions/adapters/canary-store.ts';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { type CanaryDeps, runCanary } from '../../functions/app/canary.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createWebhook } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

/** How long the sandbox's API Gateway keeps an authorizer's answer here (a rotated key's old one works until then). */
const AUTHORIZER_CACHE_MS = 300;

withSandbox({ canary: false, authorizerCacheMs: AUTHORIZER_CACHE_MS }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const stores = () => ({
  store: new CanaryStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }),
  keys: new TableCanaryKey({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }),
});

const deps = (receiverUrl: string): CanaryDeps => ({
  ...stores(),
  apiUrl: sandbox.url,
  adminKey: async () => sandbox.adminKey,
  receiverUrl,
  metrics: sandbox.metrics,
  logger: NO_LOGS,
  now: Date.now,
});

/** The canary's item as the receiver reads it, every attribute. */
const rawItem = async () =>
  (await sandbox.wiring.dynamo.send(new GetCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: 'canary', sk: 'state' } }))).Item;

const putItem = (state: Record<string, unknown>) =>
  sandbox.wiring.dynamo.send(new PutCommand({ TableName: sandbox.wiring.controlTable, Item: { pk: 'canary', sk: 'state', state } }));

/** A POST to the sandbox's canary receiver, as anyone who knows its URL could send (it is public, behind a function URL in AWS). */
const postToReceiver = (body: string, headers: Record<string, string> = {}) =>
  fetch(`${sandbox.url}/sandbox/canary`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });

describe('the canary receiver', () => {
  it('answers a body that is JSON but no delivery with 400, not a failed invocation (which pages), before the canary is set up', async () => {
    // Points, not totals: a recorded source (not a count) has no total.
    const failures = () => sandbox.metrics.points('function:canaryReceiver:Errors', 0, Number.MAX_SAFE_INTEGER).length;
    const errors = failures();
    for (const body of ['null', '"text"', '{"events":"x"}', '{"events":[null]}', '{"events":[1]}']) {
      expect((await postToReceiver(body)).status, body).toBe(400);
    }
    expect(failures()).toBe(errors);
  });

  it('counts its own failure as the canaryReceiver function’s error, as in AWS, not as an API 5xx (which pages ingest-5xx)', async () => {
    // A saved state it cannot use (a secret that is no string) makes the receiver throw.
    await putItem({ tenantId: 'ten_broken', webhookId: 'wh_broken', secret: 5 });
    const points = (key: string) => sandbox.metrics.points(key, 0, Number.MAX_SAFE_INTEGER).length;
    const [apiErrors, receiverErrors] = [points('sluice:ApiServerErrors'), points('function:canaryReceiver:Errors')];
    try {
      const headers = { 'webhook-id': 'msg_x', 'webhook-timestamp': String(Math.floor(Date.now() / 1000)), 'webhook-signature': 'v1,x' };
      expect((await postToReceiver('{"events":[]}', headers)).status).toBeGreaterThanOrEqual(500);
      expect(points('function:canaryReceiver:Errors')).toBe(receiverErrors + 1);
      expect(points('sluice:ApiServerErrors')).toBe(apiErrors);
    } finally {
      await sandbox.wiring.dynamo.send(new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: 'canary', sk: 'state' } }));
    }
  });
});

describe('the canary', () => {
  it('keeps the tenant it made when its webhook cannot be made yet, and makes the webhook on the next run', async () => {
    const { store, keys } = stores();
    // The receiver refuses the webhook's verification ping at first.
    receiver.answer('/canary-not-yet', 500);

    await expect(runCanary(deps(`${receiver.url}/canary-not-yet`))).rejects.toThrow('the next run tries again');

    const first = await store.get();
    expect(first).toEqual({ tenantId: expect.stringMatching(/^ten_/) });
    const apiKey = await keys.get();
    expect(apiKey).toMatch(/^sk_/);

    const published = sandbox.metrics.total('CanaryPublished');
    const logged: Array<Record<string, unknown> | undefined> = [];
    const logger = { ...NO_LOGS, info: (_: string, fields?: Record<string, unknown>) => void logged.push(fields) };
    await runCanary({ ...deps(`${receiver.url}/canary-ready`), logger });
    // Its log names its tenant, which on-call looks for among the switches.
    expect(logged).toContainEqual({ tenant: first?.tenantId });

    const second = await store.get();
    expect(second).toEqual({
      tenantId: first?.tenantId,
      webhookId: expect.stringMatching(/^wh_/),
      secret: expect.stringMatching(/^whsec_/),
    });
    expect(await keys.get()).toBe(apiKey);
    // The item the public receiver reads holds no API key.
    expect(JSON.stringify(await rawItem())).not.toContain(apiKey);
    expect(sandbox.metrics.total('CanaryPublished')).toBe(published + 1);
    await receiver.waitFor(() => receiver.events('/canary-ready').some((e) => e.type === 'sluice_canary.tick'), 10_000);
    // A third run uses what is saved: no new tenant, no new webhook, the same key.
    await runCanary(deps(`${receiver.url}/canary-ready`));
    expect(await store.get()).toEqual(second);
    expect(await keys.get()).toBe(apiKey);
  });

  it('counts a publish whose 202 rejected its event (a storage failure) as failed, not as published', async () => {
    // The sandbox's API behind a stand-in that answers the canary's publish as ingest
    // answers when its write fails: 202, the event rejected `internal`.
    const standIn = http.createServer(async (req, res) => {
      const body = await new Promise<string>((resolve) => {
        let text = '';
        req.on('data', (chunk) => {
          text += chunk;
        });
        req.on('end', () => resolve(text));
      });
      if (req.method === 'POST' && req.url === '/v1/events') {
        res.writeHead(202, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ events: [{ status: 'rejected', error: { code: 'internal', message: 'try again' } }] }));
        return;
      }
      const answer = await fetch(`${sandbox.url}${req.url}`, {
        method: req.method ?? 'GET',
        headers: { authorization: req.headers.authorization ?? '', 'content-type': 'application/json' },
        ...(body && { body }),
      });
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(await answer.text());
    });
    await new Promise<void>((resolve) => standIn.listen(0, '127.0.0.1', resolve));
    try {
      const published = sandbox.metrics.total('CanaryPublished');
      const failed = sandbox.metrics.total('CanaryPublishFailed');
      const logged: Array<Record<string, unknown> | undefined> = [];
      const logger = { ...NO_LOGS, error: (_: string, fields?: Record<string, unknown>) => void logged.push(fields) };
      const { port } = standIn.address() as AddressInfo;
      await runCanary({ ...deps(`${receiver.url}/canary-rejected`), apiUrl: `http://127.0.0.1:${port}`, logger });
      expect(sandbox.metrics.total('CanaryPublished')).toBe(published);
      expect(sandbox.metrics.total('CanaryPublishFailed')).toBe(failed + 1);
      expect(logged).toContainEqual(expect.objectContaining({ result: 'rejected', code: 'internal' }));
    } finally {
      await new Promise((resolve) => standIn.close(resolve));
    }
  });

  it('deletes a webhook an earlier run made but could not save, before it makes the one it keeps', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const apiKey = await keys.get();
    if (!state || !apiKey) throw new Error('no canary state');
    // As if the webhook's 201 had been lost: it exists, and the saved state does not know it.
    await putItem({ tenantId: state.tenantId });
    const orphan = await createWebhook(sandbox, apiKey, { resource: 'sluice-canary', url: `${receiver.url}/canary-orphan` });

    await runCanary(deps(`${receiver.url}/canary-ready`));

    const webhooks = (await call(sandbox, 'GET', '/v1/webhooks', { key: apiKey })).body.data.map((w: { id: string }) => w.id);
    const saved = await store.get();
    expect(webhooks).toEqual([saved && 'webhookId' in saved ? saved.webhookId : 'none']);
    expect(webhooks).not.toContain(orphan.id);
  });

  it('moves an API key saved in its item (as earlier versions did) to the key store, and goes on with the same tenant', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const apiKey = await keys.get();
    if (!state || !hasWebhook(state) || !apiKey) throw new Error('no canary state');
    await putItem({ ...state, apiKey });
    await sandbox.wiring.dynamo.send(new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: 'canary-key', sk: 'key' } }));
    expect(await keys.get()).toBeUndefined();
    const published = sandbox.metrics.total('CanaryPublished');

    await runCanary(deps(`${receiver.url}/canary-ready`));

    expect(await keys.get()).toBe(apiKey);
    expect(await store.get()).toEqual(state);
    expect(JSON.stringify(await rawItem())).not.toContain(apiKey);
    expect(sandbox.metrics.total('CanaryPublished')).toBe(published + 1);
  });

  it('re-enables its own webhook when it finds it disabled or quarantined, so the alarm clears once the receiver works', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const apiKey = await keys.get();
    if (!state || !hasWebhook(state) || !apiKey) throw new Error('no canary state');
    const health = async () => (await call(sandbox, 'GET', `/v1/webhooks/${state.webhookId}`, { key: apiKey })).body;
    const logged: string[] = [];
    const logger = { ...NO_LOGS, warn: (message: string) => void logged.push(message) };

    // Disabled (by hand, or after 3 days quarantined): nothing else would bring it back.
    expect((await call(sandbox, 'PATCH', `/v1/webhooks/${state.webhookId}`, { key: apiKey, body: { status: 'disabled' } })).status).toBe(
      200,
    );
    // Not while its receiver still fails: its ticks would use up their retries, to dead letters.
    receiver.answer('/canary-ready', 500);
    await runCanary({ ...deps(`${receiver.url}/canary-ready`), logger });
    expect(await health()).toMatchObject({ status: 'disabled' });
    expect(logged).toEqual(['Canary receiver does not answer: its webhook stays as it is']);
    logged.splice(0);
    receiver.answer('/canary-ready', 200);
    await runCanary({ ...deps(`${receiver.url}/canary-ready`), logger });
    expect(await health()).toMatchObject({ status: 'active', health: { state: 'healthy' } });

    // Quarantined: its probes could be an hour apart.
    const webhooks = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const webhook = await webhooks.get(state.tenantId, state.webhookId);
    if (!webhook) throw new Error('no canary webhook');
    const quarantined = { ...webhook.health, state: 'quarantined' as const, consecutiveFailures: 5, nextProbeAt: Date.now() + 3_600_000 };
    expect(await webhooks.saveHealth(webhook, quarantined)).toBe(true);
    await runCanary({ ...deps(`${receiver.url}/canary-ready`), logger });
    expect(await health()).toMatchObject({ status: 'active', health: { state: 'healthy' } });
    expect(logged.filter((m) => m === 'Canary re-enabled its webhook')).toHaveLength(2);

    // Healthy: left as it is.
    await runCanary({ ...deps(`${receiver.url}/canary-ready`), logger });
    expect(logged).toHaveLength(2);
  });

  it('moves its webhook to the receiver URL it is given when the webhook has another (a sandbox restarted on another PORT)', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const apiKey = await keys.get();
    if (!state || !hasWebhook(state) || !apiKey) throw new Error('no canary state');
    const before = await call(sandbox, 'GET', `/v1/webhooks/${state.webhookId}`, { key: apiKey });
    expect(before.body).toMatchObject({ url: `${receiver.url}/canary-ready` });

    // The same data directory, the receiver now elsewhere: the old URL answers nothing.
    await runCanary(deps(`${receiver.url}/canary-moved`));

    const after = await call(sandbox, 'GET', `/v1/webhooks/${state.webhookId}`, { key: apiKey });
    expect(after.body).toMatchObject({ url: `${receiver.url}/canary-moved`, status: 'active' });
    await receiver.waitFor(() => receiver.events('/canary-moved').some((e) => e.type === 'sluice_canary.tick'), 10_000);
    // Back where the other tests expect it.
    await runCanary(deps(`${receiver.url}/canary-ready`));
  });

  it('makes its webhook again when it was deleted by hand', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const apiKey = await keys.get();
    if (!state || !hasWebhook(state) || !apiKey) throw new Error('no canary state');
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${state.webhookId}`, { key: apiKey })).status).toBe(204);

    const published = sandbox.metrics.total('CanaryPublished');
    await runCanary(deps(`${receiver.url}/canary-ready`));
    const fresh = await store.get();
    if (!fresh || !hasWebhook(fresh)) throw new Error('no canary webhook saved');
    expect(fresh.webhookId).not.toBe(state.webhookId);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${fresh.webhookId}`, { key: apiKey })).status).toBe(200);
    expect(sandbox.metrics.total('CanaryPublished')).toBe(published + 1);
  });

  it('gives its tenant a new key when its own is refused (an admin rotated it), and publishes with it on the next run', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const oldKey = await keys.get();
    if (!state || !hasWebhook(state) || !oldKey) throw new Error('no canary state');
    // An admin rotates the canary's key (it leaked, say): the new key goes to the admin, not to the canary.
    const rotated = await call(sandbox, 'POST', `/v1/admin/tenants/${state.tenantId}/rotate-key`, { key: sandbox.adminKey });
    expect(rotated.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, AUTHORIZER_CACHE_MS + 100));
    const published = sandbox.metrics.total('CanaryPublished');

    await runCanary(deps(`${receiver.url}/canary-ready`));
    const renewed = await keys.get();
    expect(renewed).toMatch(/^sk_/);
    expect(renewed).not.toBe(oldKey);
    expect(renewed).not.toBe(rotated.body.api_key);
    // The admin's key stops too: only the canary knows its tenant's key.
    await new Promise((resolve) => setTimeout(resolve, AUTHORIZER_CACHE_MS + 100));
    expect((await call(sandbox, 'GET', '/v1/webhooks', { key: rotated.body.api_key })).status).toBe(401);

    await runCanary(deps(`${receiver.url}/canary-ready`));
    expect(sandbox.metrics.total('CanaryPublished')).toBe(published + 1);
    // The same tenant and webhook, nothing made again.
    expect(await store.get()).toEqual(state);
  });

  it('gives its tenant a new key when its own is refused before its webhook was made, and makes the webhook on the next run', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const oldKey = await keys.get();
    if (!state || !oldKey) throw new Error('no canary state');
    // Its webhook not made yet (its receiver was down, say), and then an admin rotates its key.
    await putItem({ tenantId: state.tenantId });
    const rotated = await call(sandbox, 'POST', `/v1/admin/tenants/${state.tenantId}/rotate-key`, { key: sandbox.adminKey });
    expect(rotated.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, AUTHORIZER_CACHE_MS + 100));

    await runCanary(deps(`${receiver.url}/canary-ready`));
    const renewed = await keys.get();
    expect(renewed).toMatch(/^sk_/);
    expect(renewed).not.toBe(oldKey);
    expect(renewed).not.toBe(rotated.body.api_key);

    const published = sandbox.metrics.total('CanaryPublished');
    await runCanary(deps(`${receiver.url}/canary-ready`));
    expect(sandbox.metrics.total('CanaryPublished')).toBe(published + 1);
    const saved = await store.get();
    expect(saved?.tenantId).toBe(state.tenantId);
    expect(saved && hasWebhook(saved)).toBe(true);
  });

  it('says what to do when its tenant is deleted', async () => {
    const { store } = stores();
    const state = await store.get();
    if (!state) throw new Error('no canary state');
    expect((await call(sandbox, 'DELETE', `/v1/admin/tenants/${state.tenantId}`, { key: sandbox.adminKey })).status).toBe(204);
    await new Promise((resolve) => setTimeout(resolve, AUTHORIZER_CACHE_MS + 100));
    await expect(runCanary(deps(`${receiver.url}/canary-ready`))).rejects.toThrow(
      `The canary's tenant ${state.tenantId} is gone: delete the control table's canary item (pk "canary")`,
    );
    // The operator's way out, as for a lost key (below): the next run makes a new tenant.
    await sandbox.wiring.dynamo.send(new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: 'canary', sk: 'state' } }));
    await runCanary(deps(`${receiver.url}/canary-ready`));
    expect((await store.get())?.tenantId).not.toBe(state.tenantId);
  });

  it('gives its tenant a new key when the key store lost it, and goes on with the same tenant and webhook', async () => {
    const { store, keys } = stores();
    const state = await store.get();
    const apiKey = await keys.get();
    if (!state || !apiKey) throw new Error('no canary state');
    // A restored or recreated secret: the key is gone from the store.
    await sandbox.wiring.dynamo.send(new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: 'canary-key', sk: 'key' } }));
    const published = sandbox.metrics.total('CanaryPublished');

    await runCanary(deps(`${receiver.url}/canary-ready`));
    expect(sandbox.metrics.total('CanaryPublished')).toBe(published + 1);
    expect(await store.get()).toEqual(state);
    const renewed = await keys.get();
    expect(renewed).toMatch(/^sk_/);
    expect(renewed).not.toBe(apiKey);
    // The key it lost no longer works.
    await new Promise((resolve) => setTimeout(resolve, AUTHORIZER_CACHE_MS + 100));
    expect((await call(sandbox, 'GET', '/v1/webhooks', { key: apiKey })).status).toBe(401);
  });
});

describe('the canary receiver, set up', () => {
  it('answers a body that is JSON but no delivery with 400, signed or not', async () => {
    const { deliveryHeaders } = await import('../../functions/core/signing.ts');
    const state = await stores().store.get();
    if (!state || !hasWebhook(state)) throw new Error('the canary has no webhook');
    const failures = () => sandbox.metrics.points('function:canaryReceiver:Errors', 0, Number.MAX_SAFE_INTEGER).length;
    const errors = failures();
    expect((await postToReceiver('null')).status).toBe(400);
    const body = '{"webhook":"wh_x","events":[null]}';
    const signed = deliveryHeaders([state.secret], 'msg_odd', Math.floor(Date.now() / 1000), body, 'test');
    expect((await postToReceiver(body, { ...signed })).status).toBe(400);
    expect(failures()).toBe(errors);
  });
});
