/**
 * A tenant's API key can be replaced when it leaked: the new key works at once, the
 * old one stops within the authorizer cache's time, and the tenant keeps everything
 * else (webhooks, events, switches, its usage plan's throttle). A rotation or a
 * creation that fails halfway, or whose write applied with its answer lost, never
 * leaves the tenant without a working key, nor with two.
 */
import { type DynamoDBDocumentClient, GetCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { TenantStore } from '../../functions/adapters/tenant-store.ts';
import { LocalUsagePlans } from '../../functions/adapters/usage-plans.ts';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { createTenant as createTenantDirect, deleteTenant, rotateTenantKey, updateTenant } from '../../functions/app/tenants.ts';
import { ApiError } from '../../functions/core/errors.ts';
import type { Tenant } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, expectError, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

/** The sandbox keeps an authorizer's answer this long (API Gateway's cache; a minute in the stack). */
const CACHE_MS = 1_000;

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ authorizerCacheMs: CACHE_MS, config: { switchCacheMs: 500 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const rotate = (id: string, key = sandbox.adminKey) => call(sandbox, 'POST', `/v1/admin/tenants/${id}/rotate-key`, { key });
const works = async (key: string) => (await call(sandbox, 'GET', '/v1/webhooks', { key })).status;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('POST /v1/admin/tenants/{id}/rotate-key', () => {
  it('gives a new key that works at once; the old one stops within the cache time; the tenant keeps its webhooks, events and switches', async () => {
    const tenant = await createTenant(sandbox, 'leaky');
    const webhook = await createWebhook(sandbox, tenant.key, { resource: 'project:1', url: `${receiver.url}/leaky` });
    expect(
      (await publish(sandbox, tenant.key, [{ resource: 'task:1', parents: ['project:1'], type: 'task.changed', data: 1 }])).status,
    ).toBe(202);
    const paused = await call(sandbox, 'PUT', '/v1/admin/switches', {
      key: sandbox.adminKey,
      body: { scope: 'resource', tenant: tenant.id, target: 'task:2', action: 'pause' },
    });
    expect(paused.status).toBe(200);

    const rotated = await rotate(tenant.id);
    expect(rotated.status).toBe(200);
    expect(rotated.body).toEqual({ id: tenant.id, api_key: expect.stringMatching(/^sk_[A-Za-z0-9_-]{43}$/) });
    const fresh = rotated.body.api_key as string;
    expect(fresh).not.toBe(tenant.key);

    // The new key sees the same tenant: its webhook, and events keep flowing to it.
    const listed = await call(sandbox, 'GET', '/v1/webhooks', { key: fresh });
    expect(listed.status).toBe(200);
    expect(listed.body.data.map((w: { id: string }) => w.id)).toEqual([webhook.id]);
    expect((await publish(sandbox, fresh, [{ resource: 'task:1', parents: ['project:1'], type: 'task.changed', data: 2 }])).status).toBe(
      202,
    );
    await receiver.waitFor(() => receiver.deliveries('/leaky').flatMap((d) => d.json.events).length >= 2);
    expect(receiver.deliveries('/leaky').flatMap((d) => d.json.events.map((e) => [e.data, e.seq]))).toEqual([
      [1, 1],
      [2, 2],
    ]);
    const switches = await call(sandbox, 'GET', '/v1/admin/switches', { key: sandbox.adminKey });
    expect(switches.body.data).toContainEqual(expect.objectContaining({ id: paused.body.id, tenant: tenant.id }));

    // The old key was used just now, so API Gateway (and the sandbox) may still allow it
    // from its cache; past the cache's time it is refused.
    await sleep(CACHE_MS + 200);
    expectError(await call(sandbox, 'GET', '/v1/webhooks', { key: tenant.key }), 401, 'unauthorized');
    expect(await works(fresh)).toBe(200);
  });

  it('refuses a key at once when no answer for it is cached, and a second rotation stops the first one’s key', async () => {
    const tenant = await createTenant(sandbox, 'twice');
    const first = (await rotate(tenant.id)).body.api_key as string;
    expect(await works(tenant.key)).toBe(401);
    const second = (await rotate(tenant.id)).body.api_key as string;
    expect(await works(second)).toBe(200);
    await sleep(CACHE_MS + 200);
    expect(await works(first)).toBe(401);
    expect(await works(tenant.key)).toBe(401);
  });

  it('rotates the key of a tenant made before keys could be rotated (its item names no key): the old key stops', async () => {
    const tenant = await createTenant(sandbox, 'older');
    await sandbox.wiring.dynamo.send(
      new UpdateCommand({
        TableName: sandbox.wiring.controlTable,
        Key: { pk: `tenant#${tenant.id}`, sk: 'tenant' },
        UpdateExpression: 'REMOVE #key_hash',
        ExpressionAttributeNames: { '#key_hash': 'key_hash' },
      }),
    );
    const fresh = (await rotate(tenant.id)).body.api_key as string;
    expect(await works(fresh)).toBe(200);
    expect(await works(tenant.key)).toBe(401);
  });

  it('keeps the tenant’s usage-plan throttle', async () => {
    const tenant = await createTenant(sandbox, 'slow', { rate_per_second: 1, burst: 1 });
    const fresh = (await rotate(tenant.id)).body.api_key as string;
    const answers = [await works(fresh), await works(fresh)];
    expect(answers).toEqual([200, 429]);
  });

  it('answers 404 for no such tenant, 403 to a tenant key, and needs no body', async () => {
    const tenant = await createTenant(sandbox, 'other');
    expectError(await rotate('ten_0000000000000000000'), 404, 'not_found');
    expectError(await rotate('ten_nope'), 404, 'not_found');
    expectError(await rotate(`ten_${'a'.repeat(1_100)}`), 404, 'not_found');
    expectError(await rotate(tenant.id, tenant.key), 403, 'forbidden');
    expect(await works(tenant.key)).toBe(200);
  });
});

describe('GET /v1/admin/tenants/{id}', () => {
  it('shows the tenant, never a key; 404 for none; 403 to a tenant key', async () => {
    const created = await call(sandbox, 'POST', '/v1/admin/tenants', {
      key: sandbox.adminKey,
      body: { name: 'shown', limits: { max_webhooks: 7 } },
    });
    const id = created.body.id as string;
    const shown = await call(sandbox, 'GET', `/v1/admin/tenants/${id}`, { key: sandbox.adminKey });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual({
      id,
      name: 'shown',
      limits: { max_webhooks: 7, rate_per_second: 500, burst: 1_000 },
      created_at: created.body.created_at,
    });
    expect(JSON.stringify(shown.body)).not.toMatch(/sk_|key|hash/);
    expectError(await call(sandbox, 'GET', '/v1/admin/tenants/ten_0000000000000000000', { key: sandbox.adminKey }), 404, 'not_found');
    expectError(await call(sandbox, 'GET', `/v1/admin/tenants/${id}`, { key: created.body.api_key }), 403, 'forbidden');
  });
});

/**
 * A client on the sandbox's DynamoDB whose writes of one kind go wrong once, as a
 * network does: `fault(input)` says what happens to a matching write.
 */
function faultyClient(match: (command: string, input: Record<string, unknown>) => 'lose-answer' | 'retry-applied' | 'fail' | undefined) {
  const client = documentClient(sandbox.emulators.dynamo);
  let fired = false;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const command = String(context.commandName ?? '');
      const mode = fired ? undefined : match(command, args.input as Record<string, unknown>);
      if (mode === undefined) return next(args);
      fired = true;
      if (mode === 'fail') throw Object.assign(new Error('socket hang up'), { name: 'NetworkError' });
      const applied = await next(args);
      // The write applied; its answer never came back.
      if (mode === 'lose-answer') throw Object.assign(new Error('socket hang up'), { name: 'NetworkError' });
      // The SDK sent it again, and that second try is what the caller hears.
      void applied;
      return next(args);
    },
    { step: 'initialize', name: 'fault' },
  );
  return client;
}

const isUpdateOfKeyHash = (input: Record<string, unknown>) =>
  String(input.UpdateExpression ?? '').length > 0 && Object.values(input.ExpressionAttributeNames ?? {}).includes('key_hash');
const isPutOf = (prefix: string) => (input: Record<string, unknown>) =>
  String((input.Item as Record<string, unknown> | undefined)?.pk ?? '').startsWith(prefix);

function tenantDeps(client: DynamoDBDocumentClient) {
  return { tenants: new TenantStore({ client, tableName: sandbox.wiring.controlTable }), usagePlans: new LocalUsagePlans(), now: Date.now };
}

describe('a rotation that fails halfway or loses its answer', () => {
  it.each([
    ['whose retry was refused (the SDK sent it again) is a rotation done', 'retry-applied'],
    ['whose answer was lost is a rotation done, not undone', 'lose-answer'],
  ] as const)('a switch that applied but %s', async (_how, fault) => {
    const tenant = await createTenant(sandbox, fault);
    const deps = tenantDeps(faultyClient((_c, input) => (isUpdateOfKeyHash(input) ? fault : undefined)));
    const rotated = await rotateTenantKey(deps, tenant.id);
    expect(await works(rotated.api_key)).toBe(200);
    expect(await works(tenant.key)).toBe(401);
  });

  it('a switch that failed leaves the old key working and the new one refused', async () => {
    const tenant = await createTenant(sandbox, 'failed');
    let attempted: string | undefined;
    const deps = tenantDeps(
      faultyClient((_c, input) => {
        if (isPutOf('apikey#')(input)) attempted = String((input.Item as { pk: string }).pk);
        return isUpdateOfKeyHash(input) ? 'fail' : undefined;
      }),
    );
    await expect(rotateTenantKey(deps, tenant.id)).rejects.toThrow('socket hang up');
    expect(await works(tenant.key)).toBe(200);
    expect(attempted).toBeDefined();
    // The new key's item is removed again: no key that nobody was given stays on the tenant.
    const stray = await sandbox.wiring.dynamo.send(
      new GetCommand({
        TableName: sandbox.wiring.controlTable,
        Key: { pk: attempted, sk: 'apikey' },
        ConsistentRead: true,
      }),
    );
    expect(stray.Item).toBeUndefined();
  });

  it('an old key whose item could not be deleted is refused all the same', async () => {
    const tenant = await createTenant(sandbox, 'undeleted');
    const deps = tenantDeps(faultyClient((command) => (/^Delete/.test(command) ? 'fail' : undefined)));
    const rotated = await rotateTenantKey(deps, tenant.id);
    expect(await works(rotated.api_key)).toBe(200);
    expect(await works(tenant.key)).toBe(401);
  });

  it('a new key item whose put was sent again after it applied is the rotation’s own', async () => {
    const tenant = await createTenant(sandbox, 'put-twice');
    const deps = tenantDeps(faultyClient((_c, input) => (isPutOf('apikey#')(input) ? 'retry-applied' : undefined)));
    const rotated = await rotateTenantKey(deps, tenant.id);
    expect(await works(rotated.api_key)).toBe(200);
    expect(await works(tenant.key)).toBe(401);
  });
});

describe('a tenant creation whose write applied but whose retry was refused', () => {
  it.each([
    ['the tenant item', 'tenant#'],
    ['the key item', 'apikey#'],
  ])('%s sent again after it applied: the tenant is made, and its key works', async (_name, prefix) => {
    const deps = tenantDeps(faultyClient((_c, input) => (isPutOf(prefix)(input) ? 'retry-applied' : undefined)));
    const created = await createTenantDirect(deps, {
      name: `retried-${prefix}`,
      limits: { max_webhooks: 1, rate_per_second: 5, burst: 5 },
    });
    expect(await works(created.api_key)).toBe(200);
    expect((await call(sandbox, 'GET', `/v1/admin/tenants/${created.id}`, { key: sandbox.adminKey })).status).toBe(200);
  });
});

describe('a tenant creation that fails', () => {
  it('leaves no key item behind when the key item applied but its answer was lost', async () => {
    let keyPk: unknown;
    const deps = tenantDeps(
      faultyClient((_c, input) => {
        if (!isPutOf('apikey#')(input)) return undefined;
        keyPk = (input.Item as Record<string, unknown>).pk;
        return 'lose-answer';
      }),
    );
    await expect(createTenantDirect(deps, { name: 'lost-key', limits: { max_webhooks: 1, rate_per_second: 5, burst: 5 } })).rejects.toThrow(
      'socket hang up',
    );
    expect(keyPk).toMatch(/^apikey#/);
    const client = documentClient(sandbox.emulators.dynamo);
    const found = await client.send(new GetCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: keyPk, sk: 'apikey' } }));
    expect(found.Item).toBeUndefined();
  });
});

describe('a rotation that races a deletion', () => {
  it('is refused with 404 and leaves no key, when the deletion began between its read and its switch', async () => {
    const tenant = await createTenant(sandbox, 'rotating-away');
    const client = documentClient(sandbox.emulators.dynamo);
    let newKeyHash: string | undefined;
    // The deletion begins while the rotation is between its two writes.
    class DeletedMeanwhile extends TenantStore {
      override async putKey(keyHash: string, tenantId: string): Promise<void> {
        await super.putKey(keyHash, tenantId);
        newKeyHash = keyHash;
        await this.beginDeletion(tenantId, Date.now());
      }
    }
    const deps = {
      tenants: new DeletedMeanwhile({ client, tableName: sandbox.wiring.controlTable }),
      usagePlans: new LocalUsagePlans(),
      now: Date.now,
    };
    await expect(rotateTenantKey(deps, tenant.id)).rejects.toMatchObject({ code: 'not_found' });
    // Without the check, the tenant being deleted named the new key, whose item stayed.
    const found = await client.send(
      new GetCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: `apikey#${newKeyHash}`, sk: 'apikey' } }),
    );
    expect(newKeyHash).toBeDefined();
    expect(found.Item).toBeUndefined();
  });
});

describe('a change of limits whose usage plan could not be set', () => {
  it.each([
    ['throttled by API Gateway', 'TooManyRequestsException', 429, 'rate_limited'],
    ['failing', 'InternalError', 500, 'internal'],
  ])('%s: the limits are stored, the answer says to send it again, and sending it again sets the plan', async (_name, errorName, status, code) => {
    const tenant = await createTenant(sandbox, `replan-${code}`, { rate_per_second: 3, burst: 3 });
    const store = new TenantStore({ client: documentClient(sandbox.emulators.dynamo), tableName: sandbox.wiring.controlTable });
    const plans = new LocalUsagePlans();
    const set: number[] = [];
    // API Gateway's answer to UpdateUsagePlan, which no emulator gives: the first call fails.
    let failures = 1;
    const usagePlans = {
      provision: plans.provision.bind(plans),
      remove: plans.remove.bind(plans),
      setThrottle: async (provisioning: Record<string, string>, changed: Tenant) => {
        if (failures-- > 0) throw Object.assign(new Error('usage plan not changed'), { name: errorName });
        set.push(changed.limits.rate_per_second);
        await plans.setThrottle(provisioning, changed);
      },
    };
    const deps = { tenants: store, usagePlans, now: Date.now };
    const change = { limits: { rate_per_second: 40 } };
    const failed = await updateTenant(deps, tenant.id, change).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ApiError);
    expect(failed).toMatchObject({ code, status });
    expect((await store.get(tenant.id))?.limits).toEqual({ max_webhooks: 100, rate_per_second: 40, burst: 3 });
    expect(set).toEqual([]);

    expect(await updateTenant(deps, tenant.id, change)).toMatchObject({ limits: { rate_per_second: 40, burst: 3 } });
    expect(set).toEqual([40]);
  });

  it('changes no usage plan for a new name or max_webhooks alone', async () => {
    const tenant = await createTenant(sandbox, 'renamed');
    const store = new TenantStore({ client: documentClient(sandbox.emulators.dynamo), tableName: sandbox.wiring.controlTable });
    const plans = new LocalUsagePlans();
    let calls = 0;
    const usagePlans = {
      provision: plans.provision.bind(plans),
      remove: plans.remove.bind(plans),
      setThrottle: async () => {
        calls++;
      },
    };
    const updated = await updateTenant({ tenants: store, usagePlans, now: Date.now }, tenant.id, {
      name: 'acme 2',
      limits: { max_webhooks: 7 },
    });
    expect(updated).toMatchObject({ name: 'acme 2', limits: { max_webhooks: 7 } });
    expect(calls).toBe(0);
  });
});

describe('two changes of limits at once', () => {
  it('leave the usage plan with the limits the tenant ends with, whichever sets the plan last', async () => {
    const tenant = await createTenant(sandbox, 'raced', { rate_per_second: 3, burst: 3 });
    const store = new TenantStore({ client: documentClient(sandbox.emulators.dynamo), tableName: sandbox.wiring.controlTable });
    const plans = new LocalUsagePlans();
    const set: number[] = [];
    let raced = false;
    const usagePlans = {
      provision: plans.provision.bind(plans),
      remove: plans.remove.bind(plans),
      setThrottle: async (provisioning: Record<string, string>, changed: Tenant) => {
        // Another change writes the item after this one did, and sets the plan before this one does.
        if (!raced) {
          raced = true;
          const other = await store.update(tenant.id, { limits: { rate_per_second: 90 } });
          set.push(other?.tenant.limits.rate_per_second ?? 0);
        }
        set.push(changed.limits.rate_per_second);
        await plans.setThrottle(provisioning, changed);
      },
    };
    const answer = await updateTenant({ tenants: store, usagePlans, now: Date.now }, tenant.id, { limits: { rate_per_second: 40 } });
    // The plan was set to 40 after the other change's 90: set again from the item, which says 90.
    expect(set).toEqual([90, 40, 90]);
    expect(answer.limits.rate_per_second).toBe(90);
    expect((await store.get(tenant.id))?.limits.rate_per_second).toBe(90);
  });
});

describe('changes of limits that keep landing', () => {
  it('answer 409 when the usage plan may not have the limits the tenant ends with, after three settings', async () => {
    const tenant = await createTenant(sandbox, 'churned', { rate_per_second: 3, burst: 3 });
    const store = new TenantStore({ client: documentClient(sandbox.emulators.dynamo), tableName: sandbox.wiring.controlTable });
    const plans = new LocalUsagePlans();
    let rate = 100;
    const usagePlans = {
      provision: plans.provision.bind(plans),
      remove: plans.remove.bind(plans),
      // Each setting is followed by another change of the item, by other requests.
      setThrottle: async (provisioning: Record<string, string>, changed: Tenant) => {
        await plans.setThrottle(provisioning, changed);
        await store.update(tenant.id, { limits: { rate_per_second: ++rate } });
      },
    };
    await expect(
      updateTenant({ tenants: store, usagePlans, now: Date.now }, tenant.id, { limits: { rate_per_second: 40 } }),
    ).rejects.toMatchObject({
      code: 'conflict',
    });
    expect(rate).toBe(103);
  });
});

describe('DELETE /v1/admin/tenants/{id}', () => {
  const remove = (id: string, key = sandbox.adminKey) => call(sandbox, 'DELETE', `/v1/admin/tenants/${id}`, { key });

  it('shuts the tenant out at once, deletes its webhooks and itself, and is the admin’s alone', async () => {
    const tenant = await createTenant(sandbox, 'leaving');
    const other = await createTenant(sandbox, 'staying');
    await createWebhook(sandbox, tenant.key, { resource: 'project:1', url: `${receiver.url}/leaving` });
    await createWebhook(sandbox, tenant.key, { resource: 'project:2', url: `${receiver.url}/leaving` });
    const otherHook = await createWebhook(sandbox, other.key, { resource: 'project:1', url: `${receiver.url}/staying` });
    expect(
      (await publish(sandbox, tenant.key, [{ resource: 'task:1', parents: ['project:1'], type: 'task.changed', data: 1 }])).status,
    ).toBe(202);
    await receiver.waitFor(() => receiver.deliveries('/leaving').flatMap((d) => d.json.events).length >= 1);
    // Its key's answer is cached now, as API Gateway's would be.
    expect(await works(tenant.key)).toBe(200);

    expectError(await remove(tenant.id, tenant.key), 403, 'forbidden');
    expect((await remove(tenant.id)).status).toBe(204);

    // The cached answer meets no usage plan (API Gateway's INVALID_API_KEY); a fresh one, no key.
    expectError(await call(sandbox, 'GET', '/v1/webhooks', { key: tenant.key }), 403, 'forbidden');
    const fresh = await fetch(`${sandbox.url}/v1/webhooks`, { headers: { authorization: `bearer ${tenant.key}` } });
    expect(fresh.status).toBe(401);
    await sleep(CACHE_MS + 100);
    expect(await works(tenant.key)).toBe(401);

    const store = new WebhookStore({ client: documentClient(sandbox.emulators.dynamo), tableName: sandbox.wiring.controlTable });
    expect(await store.list(tenant.id)).toEqual([]);
    expectError(await call(sandbox, 'GET', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey }), 404, 'not_found');
    expectError(await remove(tenant.id), 404, 'not_found');
    expectError(await rotate(tenant.id), 404, 'not_found');
    // The other tenant is untouched.
    expect((await call(sandbox, 'GET', '/v1/webhooks', { key: other.key })).body.data.map((w: { id: string }) => w.id)).toEqual([
      otherHook.id,
    ]);
  });

  it("leaves nothing in the tenant's partition: the subscriptions version its webhooks bumped goes too", async () => {
    const tenant = await createTenant(sandbox, 'leaving-nothing');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'project:1', url: `${receiver.url}/leaving-nothing` });
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
    await createWebhook(sandbox, tenant.key, { resource: 'project:2', url: `${receiver.url}/leaving-nothing` });

    expect((await remove(tenant.id)).status).toBe(204);

    // Nothing in it expires (TTL), and no API reaches a deleted tenant's partition: what stayed would stay for good.
    const left = await documentClient(sandbox.emulators.dynamo).send(
      new QueryCommand({
        TableName: sandbox.wiring.controlTable,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: { '#pk': 'pk' },
        ExpressionAttributeValues: { ':pk': `tenant#${tenant.id}` },
        ConsistentRead: true,
      }),
    );
    expect(left.Items?.map((item) => item.sk)).toEqual([]);
  });

  it('leaves no webhook behind that was being verified while the tenant was deleted: the create is refused', async () => {
    const tenant = await createTenant(sandbox, 'creating-leaving');
    let deletion: number | undefined;
    // The deletion runs, and ends, while the new webhook's ping waits for its answer.
    receiver.answer('/creating-leaving', async ({ ping }) => {
      if (ping) deletion = (await remove(tenant.id)).status;
      return 200;
    });
    const created = await call(sandbox, 'POST', '/v1/webhooks', {
      key: tenant.key,
      body: { resource: 'project:1', url: `${receiver.url}/creating-leaving` },
    });
    expect(deletion).toBe(204);
    expectError(created, 401, 'unauthorized');
    const store = new WebhookStore({ client: documentClient(sandbox.emulators.dynamo), tableName: sandbox.wiring.controlTable });
    expect(await store.list(tenant.id)).toEqual([]);
    expectError(await call(sandbox, 'GET', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey }), 404, 'not_found');
  });

  it("lifts the tenant's switches, so its paused queues drain instead of waiting on it until they expire", async () => {
    const tenant = await createTenant(sandbox, 'paused-leaving');
    const other = await createTenant(sandbox, 'paused-staying');
    await createWebhook(sandbox, tenant.key, { resource: 'project:9', url: `${receiver.url}/paused-leaving` });
    const set = async (body: Record<string, string>) => {
      const response = await call(sandbox, 'PUT', '/v1/admin/switches', { key: sandbox.adminKey, body: { ...body, reason: 'test' } });
      expect(response.status).toBe(200);
      return response.body.id as string;
    };
    await set({ scope: 'tenant', tenant: tenant.id, action: 'pause' });
    await set({ scope: 'resource', tenant: tenant.id, target: 'task:8', action: 'drop' });
    const kept = await set({ scope: 'resource', tenant: other.id, target: 'task:9', action: 'pause' });
    // Every stage's switch cache has them now.
    await sleep(600);
    const event = { resource: 'task:9', parents: ['project:9'], type: 'task.changed', data: 1 };
    expect((await publish(sandbox, tenant.key, [event, event])).status).toBe(202);
    const queued = async () =>
      (await call(sandbox, 'GET', '/v1/admin/queues?limit=100', { key: sandbox.adminKey })).body.data.filter(
        (q: { tenant: string }) => q.tenant === tenant.id,
      );
    // Held by the pause: scheduled, with its events waiting.
    await expect.poll(async () => (await queued()).map((q: { depth: number }) => q.depth), { timeout: 5_000 }).toEqual([2]);

    expect((await remove(tenant.id)).status).toBe(204);
    const listed = (await call(sandbox, 'GET', '/v1/admin/switches', { key: sandbox.adminKey })).body.data;
    expect(listed.filter((s: { tenant: string }) => s.tenant === tenant.id)).toEqual([]);
    expect(listed.map((s: { id: string }) => s.id)).toContain(kept);
    // Rung at the lift, the queue drains to no webhook.
    await expect.poll(async () => (await queued()).filter((q: { depth: number }) => q.depth > 0), { timeout: 10_000 }).toEqual([]);
    expect(
      receiver
        .deliveries('/paused-leaving')
        .flatMap((d) => d.json.events)
        .filter((e) => e.type === 'task.changed'),
    ).toEqual([]);
  });

  it('shuts the tenant out though the step after its mark failed (its key and usage plan still there): the authorizer refuses a tenant being deleted', async () => {
    const tenant = await createTenant(sandbox, 'half-deleted');
    expect(await works(tenant.key)).toBe(200);
    // DynamoDB fails the deletion of the key's item: the request answers 500 after the mark.
    class FailingKeyDelete extends TenantStore {
      override async deleteKey(): Promise<void> {
        throw Object.assign(new Error('Internal server error'), { name: 'InternalServerError' });
      }
    }
    const client = documentClient(sandbox.emulators.dynamo);
    const deps = {
      tenants: new FailingKeyDelete({ client, tableName: sandbox.wiring.controlTable }),
      usagePlans: new LocalUsagePlans(),
      now: Date.now,
      webhooks: { list: async () => ({ data: [] }), delete: async () => {} },
      switches: { list: async () => [], lift: async () => {} },
    };
    await expect(deleteTenant(deps, tenant.id)).rejects.toThrow('Internal server error');
    expectError(await call(sandbox, 'GET', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey }), 404, 'not_found');
    // Past the authorizer's cache, its key is refused, as a deleted tenant's is.
    await sleep(CACHE_MS + 100);
    expect(await works(tenant.key)).toBe(401);
    expect((await publish(sandbox, tenant.key, [{ resource: 'x:1', type: 'a.b', data: 1 }])).status).toBe(401);
    // The DELETE sent again finishes it.
    expect((await call(sandbox, 'DELETE', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey })).status).toBe(204);
  });

  it('goes on where a request out of time stopped; meanwhile the tenant is not found and gets nothing new', async () => {
    const tenant = await createTenant(sandbox, 'big');
    for (let i = 0; i < 3; i++) await createWebhook(sandbox, tenant.key, { resource: `big:${i}`, url: `${receiver.url}/big` });
    const client = documentClient(sandbox.emulators.dynamo);
    const store = new TenantStore({ client, tableName: sandbox.wiring.controlTable });
    const webhooks = new WebhookStore({ client, tableName: sandbox.wiring.controlTable });
    const service = {
      list: async (tenantId: string, limit: number) => ({ data: (await webhooks.page(tenantId, limit)).webhooks }),
      delete: async (tenantId: string, id: string) => {
        await webhooks.delete(tenantId, id);
      },
    };
    // A clock on which every webhook deleted uses up the request's time.
    let now = 0;
    const lifted: string[] = [];
    const switches = {
      list: async () => [
        { id: 'sw_theirs', tenant: tenant.id },
        { id: 'sw_others', tenant: 'ten_other' },
      ],
      lift: async (id: string) => void lifted.push(id),
    };
    const deps = {
      tenants: store,
      usagePlans: new LocalUsagePlans(),
      now: () => (now += 10),
      webhooks: service,
      switches,
      deletionBudgetMs: 5,
    };

    expect(await deleteTenant(deps, tenant.id)).toBe('deleting');
    expect((await webhooks.list(tenant.id)).length).toBe(2);
    expectError(await call(sandbox, 'GET', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey }), 404, 'not_found');
    expectError(
      await call(sandbox, 'PATCH', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey, body: { name: 'back' } }),
      404,
      'not_found',
    );
    expectError(await rotate(tenant.id), 404, 'not_found');
    expectError(
      await call(sandbox, 'PUT', '/v1/admin/switches', {
        key: sandbox.adminKey,
        body: { scope: 'tenant', tenant: tenant.id, action: 'pause' },
      }),
      404,
      'not_found',
    );

    expect(await deleteTenant(deps, tenant.id)).toBe('deleting');
    expect(await deleteTenant(deps, tenant.id)).toBe('deleting');
    // Its switches are lifted once its webhooks are gone, and only its own.
    expect(lifted).toEqual([]);
    expect(await deleteTenant(deps, tenant.id)).toBe('deleted');
    expect(lifted).toEqual(['sw_theirs']);
    expect(await webhooks.list(tenant.id)).toEqual([]);
    await expect(deleteTenant(deps, tenant.id)).rejects.toMatchObject({ code: 'not_found' });
  });
});

describe('GET /v1/admin/tenants', () => {
  it('lists the tenants oldest first, a page at a time, with their names as they now are, and not those deleted', async () => {
    const list = async (query = '') => (await call(sandbox, 'GET', `/v1/admin/tenants${query}`, { key: sandbox.adminKey })).body;
    const all = async () => {
      const tenants: Array<{ id: string; name: string; created_at: string }> = [];
      for (let page = await list('?limit=100'); ; page = await list(`?limit=100&after=${tenants.at(-1)?.id}`)) {
        tenants.push(...page.data);
        if (!page.has_more) return tenants;
      }
    };
    const [first, second, third] = [
      await createTenant(sandbox, 'list-1'),
      await createTenant(sandbox, 'list-2'),
      await createTenant(sandbox, 'list-3'),
    ];
    const listed = (await all()).filter((t) => t.name.startsWith('list-'));
    expect(listed.map((t) => [t.id, t.name])).toEqual([
      [first.id, 'list-1'],
      [second.id, 'list-2'],
      [third.id, 'list-3'],
    ]);
    expect(listed[0]?.created_at).toMatch(/^\d{4}-\d\d-\d\dT/);

    // A page of two, then the rest after the last of it.
    const ids = (await all()).map((t) => t.id);
    const page = await list(`?limit=2&after=${ids.at(-4)}`);
    expect(page).toMatchObject({ has_more: true });
    expect(page.data.map((t: { id: string }) => t.id)).toEqual(ids.slice(-3, -1));
    expect((await list(`?limit=2&after=${ids.at(-2)}`)).data.map((t: { id: string }) => t.id)).toEqual(ids.slice(-1));

    await call(sandbox, 'PATCH', `/v1/admin/tenants/${second.id}`, { key: sandbox.adminKey, body: { name: 'list-2b' } });
    expect((await call(sandbox, 'DELETE', `/v1/admin/tenants/${third.id}`, { key: sandbox.adminKey })).status).toBe(204);
    expect((await all()).filter((t) => t.name.startsWith('list-')).map((t) => t.name)).toEqual(['list-1', 'list-2b']);

    expectError(await call(sandbox, 'GET', '/v1/admin/tenants', { key: first.key }), 403, 'forbidden');
    expectError(await call(sandbox, 'GET', '/v1/admin/tenants?limit=0', { key: sandbox.adminKey }), 400, 'invalid_request');
    expectError(
      await call(sandbox, 'GET', `/v1/admin/tenants?after=${'x'.repeat(2_000)}`, { key: sandbox.adminKey }),
      400,
      'invalid_request',
    );
  });
});
