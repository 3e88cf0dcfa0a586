/**
 * Bad input gets a clear 4xx in the SPEC's error shape and stores nothing; one
 * tenant can never see, change or receive another's webhooks or events.
 */
import http from 'node:http';
import net from 'node:net';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { type Sandbox, startSandbox } from '../../sandbox/sandbox.ts';
import { type ApiResponse, call, createTenant, createWebhook, expectError, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
let a: { id: string; key: string };
let b: { id: string; key: string };
let queues: QueueStore;

withSandbox({ config: { deliveryTimeoutMs: 500 } }, async (s, r) => {
  [sandbox, receiver] = [s, r];
  [a, b] = await Promise.all([createTenant(sandbox, 'alpha', { max_webhooks: 3 }), createTenant(sandbox, 'beta')]);
  queues = new QueueStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.eventsTable, retentionDays: 7 });
});

describe('bad input', () => {
  const good = { resource: 'task:1', type: 'task.changed', data: {} };

  it.each([
    ['malformed JSON', 400, 'invalid_request', { rawBody: '{"events": [' }],
    ['a JSON array', 400, 'invalid_request', { rawBody: '[]' }],
    ['no events', 400, 'invalid_request', { body: { events: [] } }],
    ['101 events', 400, 'invalid_request', { body: { events: Array.from({ length: 101 }, () => good) } }],
    ['a bad resource', 400, 'invalid_request', { body: { events: [{ ...good, resource: 'no spaces' }] } }],
    ['a bad type', 400, 'invalid_request', { body: { events: [{ ...good, type: 'Bad' }] } }],
    ['parents that are a number', 400, 'invalid_request', { body: { events: [{ ...good, parents: 5 }] } }],
    ['parents that are an object', 400, 'invalid_request', { body: { events: [{ ...good, parents: { p: 'project:7' } }] } }],
    ['missing data', 400, 'invalid_request', { body: { events: [{ resource: 'task:1', type: 'a' }] } }],
    ['data over 64 KiB', 400, 'invalid_request', { body: { events: [{ ...good, data: 'x'.repeat(70_000) }] } }],
    ['a body over 1 MiB', 413, 'payload_too_large', { rawBody: JSON.stringify({ events: [{ ...good, data: 'x'.repeat(1_100_000) }] }) }],
    ['a non-JSON content type', 400, 'invalid_request', { rawBody: 'events=1', contentType: 'application/x-www-form-urlencoded' }],
    // A type that only begins like JSON's: a JSON Patch is not a body of events.
    [
      'a JSON Patch content type',
      400,
      'invalid_request',
      { rawBody: JSON.stringify({ events: [good] }), contentType: 'application/json-patch+json' },
    ],
  ])('publishing %s → %i %s, nothing stored', async (_name, status, code, options) => {
    const response = await call(sandbox, 'POST', '/v1/events', { key: a.key, ...options });
    expectError(response, status, code);
    expect(await queues.readMeta({ tenantId: a.id, resource: good.resource })).toBeUndefined();
  });

  it('refuses a field on a route that takes none (rotate-secret, dead-letters/replay) with 400, changing nothing', async () => {
    const hook = await createWebhook(sandbox, b.key, { resource: 'nobody:1', url: `${receiver.url}/nobody` });
    for (const path of [`/v1/webhooks/${hook.id}/rotate-secret`, `/v1/webhooks/${hook.id}/dead-letters/replay`]) {
      // As Svix's rotation takes the secret to set: ignored, it would rotate to another one.
      expectError(
        await call(sandbox, 'POST', path, { key: b.key, body: { key: 'whsec_bWluZW1pbmVtaW5lbWluZW1pbmVtaW5l' } }),
        400,
        'invalid_request',
      );
      expectError(await call(sandbox, 'POST', path, { key: b.key, rawBody: 'key=1', contentType: 'text/plain' }), 400, 'invalid_request');
    }
    // Still a secret the webhook was given: deliveries verify with it alone.
    await publish(sandbox, b.key, [{ resource: 'nobody:1', type: 'x.y', data: 1 }]);
    await receiver.waitFor(() => receiver.deliveries('/nobody').length === 1);
    const { Webhook } = await import('standardwebhooks');
    const [delivery] = receiver.deliveries('/nobody');
    expect(() => new Webhook(hook.secret.slice('whsec_'.length)).verify(delivery?.body ?? '', delivery?.headers ?? {})).not.toThrow();
    expect(delivery?.headers['webhook-signature']?.split(' ')).toHaveLength(1);
    // With no body, or an empty object, they work as before.
    expect((await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/rotate-secret`, { key: b.key })).status).toBe(200);
    expect((await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/rotate-secret`, { key: b.key, body: {} })).status).toBe(200);
    expect((await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/dead-letters/replay`, { key: b.key })).status).toBe(202);
    await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: b.key });
  });

  it('refuses a field in the body of a DELETE, and any body of a GET, with 400, deleting nothing, where the body went unread', async () => {
    const tenant = await createTenant(sandbox, 'no-body');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'nb:1', url: `${receiver.url}/no-body` });
    const doomed = await createTenant(sandbox, 'no-body-doomed');
    const admin = sandbox.adminKey;
    const set = await call(sandbox, 'PUT', '/v1/admin/switches', {
      key: admin,
      body: { scope: 'resource', tenant: tenant.id, target: 'nb:2', action: 'pause' },
    });
    expect(set.status).toBe(200);
    for (const [path, key] of [
      [`/v1/webhooks/${hook.id}`, tenant.key],
      [`/v1/admin/switches/${set.body.id}`, admin],
      [`/v1/admin/tenants/${doomed.id}`, admin],
    ] as const) {
      // Ignored, each was deleted for good: a caller's `dry_run` did nothing of the sort.
      expectError(await call(sandbox, 'DELETE', path, { key, body: { dry_run: true } }), 400, 'invalid_request');
    }
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(200);
    expect((await call(sandbox, 'GET', `/v1/admin/tenants/${doomed.id}`, { key: admin })).status).toBe(200);
    const switches = await call(sandbox, 'GET', '/v1/admin/switches', { key: admin });
    expect(switches.body.data.map((s: { id: string }) => s.id)).toContain(set.body.id);
    // A GET's body too (fetch sends none with a GET; node:http does): a `limit` there is not the query's.
    const get = (body: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const request = http.request(`${sandbox.url}/v1/webhooks`, {
          method: 'GET',
          headers: { authorization: `Bearer ${tenant.key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        });
        request.on('response', (response) => {
          let text = '';
          response.on('data', (chunk) => {
            text += chunk;
          });
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
        });
        request.on('error', reject);
        request.end(body);
      });
    for (const body of ['{"limit":1}', '{}']) {
      const refused = await get(body);
      expect(refused.status).toBe(400);
      expect(JSON.parse(refused.body).error).toMatchObject({
        code: 'invalid_request',
        message: expect.stringMatching(/GET takes no body/),
      });
    }
    // No body, as before; a DELETE's may be an empty object.
    expect((await get('')).status).toBe(200);
    expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${set.body.id}`, { key: admin, body: {} })).status).toBe(204);
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
  });

  it('takes JSON with parameters on its content type', async () => {
    const response = await call(sandbox, 'POST', '/v1/events', {
      key: a.key,
      rawBody: JSON.stringify({ events: [{ ...good, resource: 'charset:1' }] }),
      contentType: 'Application/JSON ; charset=utf-8',
    });
    expect(response.status).toBe(202);
  });

  it('refuses a body sent without a length (chunked) once it passes 1 MiB, without waiting for its end', async () => {
    // API Gateway takes at most 10 MB; the sandbox must not buffer an endless body either.
    const url = new URL(sandbox.url);
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: '/v1/events',
          method: 'POST',
          headers: { authorization: `Bearer ${a.key}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
        },
        (response) => {
          let body = '';
          response.on('data', (chunk) => {
            body += chunk;
          });
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
        },
      );
      request.on('error', reject);
      request.write('{"events":[{"resource":"chunked:1","type":"a.b","data":"');
      // 2 MiB, and the body is never ended: only a server that counts as it reads answers.
      for (let i = 0; i < 32; i++) request.write('x'.repeat(64 * 1024));
      setTimeout(() => reject(new Error('no answer before the body ended')), 5_000).unref();
    });
    expectError({ status: answer.status, headers: new Headers(), body: JSON.parse(answer.body) }, 413, 'payload_too_large');
  });

  it("answers a body whose client hung up before the end of it as the client's trouble, not a server error that pages", async () => {
    const errors = () => sandbox.metrics.points('sluice:ApiServerErrors', 0, Number.MAX_SAFE_INTEGER).length;
    const before = errors();
    const url = new URL(sandbox.url);
    // 11 of the 1,000 bytes it declares, and the connection closed.
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(
          `POST /v1/events HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${a.key}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"events":[`,
          () => {
            socket.destroy();
            resolve();
          },
        );
      });
      socket.on('error', reject);
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(errors()).toBe(before);
  });

  it('stores nothing from a request with one bad event among good ones', async () => {
    const response = await publish(sandbox, a.key, [
      { resource: 'partial:1', type: 'a.b', data: 1 },
      { resource: 'partial:1', type: 'BAD', data: 2 },
    ]);
    expectError(response, 400, 'invalid_request');
    expect(response.body.error.message).toMatch(/events\[1\]\.type/);
    expect(await queues.readMeta({ tenantId: a.id, resource: 'partial:1' })).toBeUndefined();
  });

  it('answers unknown routes with 404 not_found', async () => {
    expectError(await call(sandbox, 'GET', '/v1/nothing-here', { key: a.key }), 404, 'not_found');
    expectError(await call(sandbox, 'GET', '/v2/events'), 404, 'not_found');
  });

  it('refuses missing, malformed and unknown keys with 401', async () => {
    expectError(await call(sandbox, 'GET', '/v1/webhooks'), 401, 'unauthorized');
    expectError(await call(sandbox, 'GET', '/v1/webhooks', { key: 'garbage' }), 401, 'unauthorized');
    expectError(await call(sandbox, 'GET', '/v1/webhooks', { key: `sk_${'A'.repeat(43)}` }), 401, 'unauthorized');
    expectError(await call(sandbox, 'GET', '/v1/webhooks', { key: `ak_${'A'.repeat(43)}` }), 401, 'unauthorized');
  });

  it('keeps admin routes for the admin key and tenant routes for tenant keys (403)', async () => {
    expectError(await call(sandbox, 'POST', '/v1/admin/tenants', { key: a.key, body: { name: 'x' } }), 403, 'forbidden');
    expectError(await call(sandbox, 'GET', '/v1/webhooks', { key: sandbox.adminKey }), 403, 'forbidden');
    // The key is judged before the query: the admin key learns nothing of a tenant route's parameters.
    for (const query of ['?limit=0', '?after=zzz', '?limit=5&limit=6']) {
      expectError(await call(sandbox, 'GET', `/v1/webhooks${query}`, { key: sandbox.adminKey }), 403, 'forbidden');
    }
  });

  it('refuses a query parameter given twice, rather than pick one', async () => {
    const tenant = await createTenant(sandbox, 'twice');
    for (const path of ['/v1/events?resource=a:1&resource=b:2', '/v1/webhooks?limit=5&limit=500', '/v1/admin/queues?limit=1&limit=2']) {
      const key = path.startsWith('/v1/admin') ? sandbox.adminKey : tenant.key;
      const answer = await call(sandbox, 'GET', path, { key });
      expect(answer.status, path).toBe(400);
      expect(answer.body.error, path).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/at most once/) });
    }
  });

  it('refuses a query parameter the route does not take, naming it and those it takes, rather than answer as if it were not there', async () => {
    const tenant = await createTenant(sandbox, 'unknown-query');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'uq:1', url: `${receiver.url}/unknown-query` });
    for (const [path, message] of [
      ['/v1/webhooks?limt=5', /limt is not a query parameter of this route \(it takes limit and after\)/],
      [`/v1/webhooks/${hook.id}/attempts?after=att_x`, /after is not a query parameter of this route \(it takes limit\)/],
      [`/v1/webhooks/${hook.id}/dead-letters?limit=5&cursor=x`, /cursor is not a query parameter/],
      ['/v1/events?resource=uq:1&token=x&page=2', /token, page are not query parameters of this route \(it takes resource and sync\)/],
      ['/v1/admin/queues?top=5', /top is not a query parameter/],
      ['/v1/admin/tenants?limit=5&offset=5', /offset is not a query parameter/],
    ] as const) {
      const key = path.startsWith('/v1/admin') ? sandbox.adminKey : tenant.key;
      const answer = await call(sandbox, 'GET', path, { key });
      expectError(answer, 400, 'invalid_request');
      expect(answer.body.error.message, path).toMatch(message);
    }
    // Those it takes still go.
    expect((await call(sandbox, 'GET', '/v1/webhooks?limit=5', { key: tenant.key })).status).toBe(200);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/attempts?limit=5`, { key: tenant.key })).status).toBe(200);
    expect((await call(sandbox, 'GET', '/v1/admin/queues?limit=5', { key: sandbox.adminKey })).status).toBe(200);
  });

  it('refuses a query parameter on a route that takes none, doing nothing, rather than act as if it were not there', async () => {
    const tenant = await createTenant(sandbox, 'no-query');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'nq:1', url: `${receiver.url}/no-query` });
    const doomed = await createTenant(sandbox, 'no-query-doomed');
    const switchBody = { scope: 'resource', tenant: tenant.id, target: 'nq:2', action: 'pause' };
    const event = { resource: 'nq:3', type: 'a.b', data: 1 };
    for (const [method, path, body] of [
      // Ignored, each of these did what the request without its query would have done.
      ['POST', '/v1/events?dry_run=true', { events: [event] }],
      ['POST', '/v1/webhooks?dry_run=true', { resource: 'nq:4', url: `${receiver.url}/no-query` }],
      ['GET', `/v1/webhooks/${hook.id}?include=secret`, undefined],
      ['PATCH', `/v1/webhooks/${hook.id}?dry_run=true`, { status: 'disabled' }],
      ['POST', `/v1/webhooks/${hook.id}/rotate-secret?dry_run=true`, undefined],
      ['POST', `/v1/webhooks/${hook.id}/replay?since=2020-01-01T00:00:00Z`, { since: '2020-01-01T00:00:00Z' }],
      ['POST', `/v1/webhooks/${hook.id}/dead-letters/replay?limit=1`, undefined],
      ['DELETE', `/v1/webhooks/${hook.id}?dry_run=true`, undefined],
      ['POST', '/v1/admin/tenants?dry_run=true', { name: 'no-query-new' }],
      ['GET', `/v1/admin/tenants/${tenant.id}?x=1`, undefined],
      ['PATCH', `/v1/admin/tenants/${tenant.id}?dry_run=true`, { name: 'renamed' }],
      ['POST', `/v1/admin/tenants/${tenant.id}/rotate-key?dry_run=true`, undefined],
      ['DELETE', `/v1/admin/tenants/${doomed.id}?dry_run=true`, undefined],
      ['PUT', '/v1/admin/switches?dry_run=true', switchBody],
      // Answered with every switch, as if filtered to the tenant's.
      ['GET', `/v1/admin/switches?tenant=${tenant.id}`, undefined],
      ['DELETE', '/v1/admin/switches/sw_aaaaaaaaaaaaaaaaaaa?dry_run=true', undefined],
      ['GET', '/v1/admin/alarms?state=ALARM', undefined],
    ] as const) {
      const key = path.startsWith('/v1/admin') ? sandbox.adminKey : tenant.key;
      const answer = await call(sandbox, method, path, { key, ...(body && { body }) });
      expectError(answer, 400, 'invalid_request');
      expect(answer.body.error.message, `${method} ${path}`).toMatch(/is not a query parameter of this route \(it takes none\)/);
    }
    // Nothing of any of them happened.
    expect(await queues.readMeta({ tenantId: tenant.id, resource: event.resource })).toBeUndefined();
    const listed = await call(sandbox, 'GET', '/v1/webhooks', { key: tenant.key });
    expect(listed.body.data.map((w: { id: string; status: string }) => [w.id, w.status])).toEqual([[hook.id, 'active']]);
    const shown = await call(sandbox, 'GET', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey });
    expect(shown.body.name).toBe('no-query');
    expect((await call(sandbox, 'GET', `/v1/admin/tenants/${doomed.id}`, { key: sandbox.adminKey })).status).toBe(200);
    const switches = await call(sandbox, 'GET', '/v1/admin/switches', { key: sandbox.adminKey });
    expect(switches.body.data.filter((s: { tenant: string }) => s.tenant === tenant.id)).toEqual([]);
    const tenants = await call(sandbox, 'GET', '/v1/admin/tenants?limit=100', { key: sandbox.adminKey });
    expect(tenants.body.data.map((t: { name: string }) => t.name)).not.toContain('no-query-new');
    // The secret was not rotated: deliveries still verify with the one the webhook was given.
    await publish(sandbox, tenant.key, [{ resource: 'nq:1', type: 'x.y', data: 1 }]);
    await receiver.waitFor(() => receiver.deliveries('/no-query').length === 1);
    const { Webhook } = await import('standardwebhooks');
    const [delivery] = receiver.deliveries('/no-query');
    expect(() => new Webhook(hook.secret.slice('whsec_'.length)).verify(delivery?.body ?? '', delivery?.headers ?? {})).not.toThrow();
    expect(delivery?.headers['webhook-signature']?.split(' ')).toHaveLength(1);
    await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key });
  });

  it('validates tenant creation', async () => {
    const response = await call(sandbox, 'POST', '/v1/admin/tenants', { key: sandbox.adminKey, body: { name: '', limits: { burst: -1 } } });
    expectError(response, 400, 'invalid_request');
    expect(response.body.error.message).toMatch(/name/);
    expect(response.body.error.message).toMatch(/burst/);
  });

  it('validates webhooks', async () => {
    const response = await call(sandbox, 'POST', '/v1/webhooks', { key: a.key, body: { resource: 'p', url: 'ftp://x', types: ['BAD'] } });
    expectError(response, 400, 'invalid_request');
    expectError(await call(sandbox, 'PATCH', '/v1/webhooks/wh_missing', { key: a.key, body: {} }), 400, 'invalid_request');
    expectError(await call(sandbox, 'PATCH', '/v1/webhooks/wh_missing', { key: a.key, body: { status: 'active' } }), 404, 'not_found');
    expectError(await call(sandbox, 'DELETE', '/v1/webhooks/wh_missing', { key: a.key }), 404, 'not_found');
    // An id far longer than any DynamoDB key names nothing: 404 on every route, never a 500.
    const long = `wh_${'a'.repeat(1_100)}`;
    for (const [method, path] of [
      ['GET', `/v1/webhooks/${long}`],
      ['DELETE', `/v1/webhooks/${long}`],
      ['POST', `/v1/webhooks/${long}/rotate-secret`],
      ['GET', `/v1/webhooks/${long}/attempts`],
    ] as const) {
      expectError(await call(sandbox, method, path, { key: a.key }), 404, 'not_found');
    }
    expectError(await call(sandbox, 'DELETE', `/v1/admin/switches/sw_${'b'.repeat(1_100)}`, { key: sandbox.adminKey }), 404, 'not_found');
  });

  it('refuses event data nested deeper than 32 levels with a 400, not a crash', async () => {
    // 100,000 levels (200 kB): written out as text, since JSON.stringify itself cannot.
    const deep = `${'['.repeat(100_000)}"bottom"${']'.repeat(100_000)}`;
    const rawBody = `{"events":[{"resource":"d:1","type":"a.b","data":${deep}}]}`;
    const response = await call(sandbox, 'POST', '/v1/events', { key: a.key, rawBody });
    expectError(response, 400, 'invalid_request');
    expect(response.body.error.message).toMatch(/32 levels/);
    let fine: unknown = 'bottom';
    for (let i = 0; i < 31; i++) fine = { next: fine };
    expect(
      (await call(sandbox, 'POST', '/v1/events', { key: a.key, body: { events: [{ resource: 'd:1', type: 'a.b', data: fine }] } })).status,
    ).toBe(202);
  });

  it('refuses a number in event data that JSON cannot carry with a 400, rather than accept it and deliver null', async () => {
    // JSON.parse reads 1e400 as Infinity, which JSON.stringify writes as null.
    const rawBody =
      '{"events":[{"resource":"n:1","type":"a.b","data":{"fine":1e308,"big":[1e400]}},{"resource":"n:1","type":"a.b","data":-1e400}]}';
    const response = await call(sandbox, 'POST', '/v1/events', { key: a.key, rawBody });
    expectError(response, 400, 'invalid_request');
    expect(response.body.error.message).toMatch(/events\[0\]\.data must hold only numbers a JSON double can represent/);
    expect(response.body.error.message).toMatch(/events\[1\]\.data must hold only numbers/);
    const fine = '{"events":[{"resource":"n:1","type":"a.b","data":{"fine":1e308,"small":5e-324}}]}';
    expect((await call(sandbox, 'POST', '/v1/events', { key: a.key, rawBody: fine })).status).toBe(202);
  });

  it('refuses an integer in event data that a JSON double cannot hold exactly with a 400, rather than deliver another number', async () => {
    // 12345678901234567890 parses as 12345678901234567000: the subscriber would get a
    // number the producer never sent, for an event answered accepted.
    const rawBody =
      '{"events":[{"resource":"i:1","type":"a.b","data":{"id":12345678901234567890,"ok":"12345678901234567890"}},{"resource":"i:1","type":"a.b","data":[-9007199254740993]}]}';
    const response = await call(sandbox, 'POST', '/v1/events', { key: a.key, rawBody });
    expectError(response, 400, 'invalid_request');
    expect(response.body.error.message).toMatch(
      /events\[0\]\.data must hold only integers a JSON double keeps exactly.*send larger ones as strings/,
    );
    expect(response.body.error.message).toMatch(/events\[1\]\.data must hold only integers/);
    // Those it keeps exactly pass, however large: 2^53 - 1, 2^60, 1e21 (exact in a double), and any decimal.
    const fine =
      '{"events":[{"resource":"i:1","type":"a.b","data":{"max":9007199254740991,"p60":1152921504606846976,"e":1000000000000000000000,"f":0.12345678901234567890,"s":"12345678901234567890"}}]}';
    expect((await call(sandbox, 'POST', '/v1/events', { key: a.key, rawBody: fine })).status).toBe(202);
  });

  it('refuses a body that is not UTF-8 with a 400, rather than accept its data with the bad bytes replaced', async () => {
    // "café" as Latin-1 (é is the lone byte 0xE9): JSON must be UTF-8 (RFC 8259). Decoded
    // leniently, the subscriber would get "caf\uFFFD" for an event answered accepted.
    const body = Buffer.concat([
      Buffer.from('{"events":[{"resource":"latin1:1","type":"a.b","data":"caf'),
      Buffer.from([0xe9]),
      Buffer.from('"}]}'),
    ]);
    const answer = await fetch(`${sandbox.url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.key}`, 'content-type': 'application/json' },
      body,
    });
    expectError({ status: answer.status, headers: answer.headers, body: await answer.json() }, 400, 'invalid_request');
    expect(await queues.readMeta({ tenantId: a.id, resource: 'latin1:1' })).toBeUndefined();
  });
});

describe('GET /v1/admin/queues', () => {
  it('shows on-call the deepest object queues, to the admin only', async () => {
    await publish(
      sandbox,
      a.key,
      Array.from({ length: 3 }, (_, i) => ({ resource: 'queues:view', type: 'a.b', data: i })),
    );
    const response = await call(sandbox, 'GET', '/v1/admin/queues?limit=5', { key: sandbox.adminKey });
    expect(response.status).toBe(200);
    expect(Array.isArray(response.body.data)).toBe(true);
    // A small index is read whole in the view's time: the answer says so, and no more.
    expect(Object.keys(response.body).sort()).toEqual(['complete', 'data']);
    expect(response.body.complete).toBe(true);
    for (const row of response.body.data) {
      expect(Object.keys(row).sort()).toEqual(['depth', 'oldest_age_s', 'rejected', 'resource', 'scheduled', 'tenant']);
    }
    expectError(await call(sandbox, 'GET', '/v1/admin/queues', { key: a.key }), 403, 'forbidden');
    expectError(await call(sandbox, 'GET', '/v1/admin/queues?limit=0', { key: sandbox.adminKey }), 400, 'invalid_request');
    expectError(await call(sandbox, 'GET', '/v1/admin/queues?limit=abc', { key: sandbox.adminKey }), 400, 'invalid_request');
  });
});

describe('per-tenant throttle (the usage plan API Gateway applies in AWS)', () => {
  it('answers 429 rate_limited with Retry-After past the tenant’s burst', async () => {
    const slow = await createTenant(sandbox, 'slow', { rate_per_second: 1, burst: 2 });
    const statuses: number[] = [];
    let last: ApiResponse | undefined;
    for (let i = 0; i < 4; i++) {
      last = await call(sandbox, 'GET', '/v1/webhooks', { key: slow.key });
      statuses.push(last.status);
    }
    expect(statuses.slice(0, 2)).toEqual([200, 200]);
    expect(statuses.at(-1)).toBe(429);
    if (!last) throw new Error('no response');
    expectError(last, 429, 'rate_limited');
    expect(Number(last.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Another tenant is not slowed by it.
    expect((await call(sandbox, 'GET', '/v1/webhooks', { key: b.key })).status).toBe(200);
  });
});

describe("changing a tenant's limits (PATCH /v1/admin/tenants/{id})", () => {
  it('sets its throttle at once and keeps the limits not given; a lower max_webhooks refuses new webhooks, not the ones there', async () => {
    const t = await createTenant(sandbox, 'growing', { rate_per_second: 1, burst: 1, max_webhooks: 2 });
    const list = () => call(sandbox, 'GET', '/v1/webhooks', { key: t.key });
    expect((await list()).status).toBe(200);
    expectError(await list(), 429, 'rate_limited');

    const raised = await call(sandbox, 'PATCH', `/v1/admin/tenants/${t.id}`, {
      key: sandbox.adminKey,
      body: { limits: { rate_per_second: 100, burst: 50 } },
    });
    expect(raised.status).toBe(200);
    expect(raised.body).toEqual({
      id: t.id,
      name: 'growing',
      limits: { rate_per_second: 100, burst: 50, max_webhooks: 2 },
      created_at: expect.any(String),
    });
    // Its bucket keeps the tokens it had (none) and fills at the new rate: in 0.6 s, 50 of
    // them at 100 a second, where the old plan would have had one.
    await new Promise((resolve) => setTimeout(resolve, 600));
    const statuses = [];
    for (let i = 0; i < 20; i++) statuses.push((await list()).status);
    expect(statuses.every((status) => status === 200)).toBe(true);

    await createWebhook(sandbox, t.key, { resource: 'g:1', url: `${receiver.url}/growing` });
    await createWebhook(sandbox, t.key, { resource: 'g:2', url: `${receiver.url}/growing` });
    const lowered = await call(sandbox, 'PATCH', `/v1/admin/tenants/${t.id}`, {
      key: sandbox.adminKey,
      body: { name: 'shrinking', limits: { max_webhooks: 1 } },
    });
    expect(lowered.body).toMatchObject({ name: 'shrinking', limits: { rate_per_second: 100, burst: 50, max_webhooks: 1 } });
    expect((await list()).body.data).toHaveLength(2);
    expectError(
      await call(sandbox, 'POST', '/v1/webhooks', { key: t.key, body: { resource: 'g:3', url: `${receiver.url}/growing` } }),
      422,
      'limit_exceeded',
    );
    expect((await call(sandbox, 'GET', `/v1/admin/tenants/${t.id}`, { key: sandbox.adminKey })).body).toEqual(lowered.body);
  });

  it.each([
    ['no change', {}],
    ['empty limits', { limits: {} }],
    ['a limit past its bound', { limits: { burst: 5_001 } }],
    ['a limit that is not an integer', { limits: { rate_per_second: 1.5 } }],
    ['an unknown limit', { limits: { quota: 5 } }],
    ['an unknown field', { plan: 'gold' }],
    ['an empty name', { name: ' ' }],
  ])('refuses %s with 400 and changes nothing', async (_name, body) => {
    const t = await createTenant(sandbox, 'steady', { rate_per_second: 7, burst: 9, max_webhooks: 4 });
    expectError(await call(sandbox, 'PATCH', `/v1/admin/tenants/${t.id}`, { key: sandbox.adminKey, body }), 400, 'invalid_request');
    expect((await call(sandbox, 'GET', `/v1/admin/tenants/${t.id}`, { key: sandbox.adminKey })).body).toMatchObject({
      name: 'steady',
      limits: { rate_per_second: 7, burst: 9, max_webhooks: 4 },
    });
  });

  it('is the admin’s alone, and answers 404 for a tenant that does not exist', async () => {
    const body = { limits: { rate_per_second: 10_000 } };
    expectError(await call(sandbox, 'PATCH', `/v1/admin/tenants/${a.id}`, { key: a.key, body }), 403, 'forbidden');
    expectError(await call(sandbox, 'PATCH', '/v1/admin/tenants/ten_nobody', { key: sandbox.adminKey, body }), 404, 'not_found');
    expect((await call(sandbox, 'GET', `/v1/admin/tenants/${a.id}`, { key: sandbox.adminKey })).body.limits.rate_per_second).not.toBe(
      10_000,
    );
  });
});

describe('endpoint verification', () => {
  it.each([
    ['answers 500', 500],
    ['answers 302', 302],
    ['never answers', 'hang' as const],
  ])('stores nothing when the endpoint %s', async (name, answer) => {
    const path = `/verify-${name.replace(/\W/g, '')}`;
    receiver.answer(path, answer);
    const before = await call(sandbox, 'GET', '/v1/webhooks', { key: b.key });
    const response = await call(sandbox, 'POST', '/v1/webhooks', { key: b.key, body: { resource: 'v:1', url: `${receiver.url}${path}` } });
    expectError(response, 422, 'endpoint_verification_failed');
    const after = await call(sandbox, 'GET', '/v1/webhooks', { key: b.key });
    expect(after.body.data).toHaveLength(before.body.data.length);
  });

  it('stores nothing when nothing listens', async () => {
    const response = await call(sandbox, 'POST', '/v1/webhooks', { key: b.key, body: { resource: 'v:1', url: 'http://127.0.0.1:9/none' } });
    expectError(response, 422, 'endpoint_verification_failed');
  });

  it('enforces max_webhooks, and failed verifications do not use up the limit', async () => {
    receiver.answer('/limit-bad', 500);
    for (let i = 0; i < 3; i++) {
      expect(
        (await call(sandbox, 'POST', '/v1/webhooks', { key: a.key, body: { resource: 'l:1', url: `${receiver.url}/limit-bad` } })).status,
      ).toBe(422);
    }
    for (let i = 0; i < 3; i++) await createWebhook(sandbox, a.key, { resource: `l:${i}`, url: `${receiver.url}/limit-ok` });
    const fourth = await call(sandbox, 'POST', '/v1/webhooks', { key: a.key, body: { resource: 'l:4', url: `${receiver.url}/limit-ok` } });
    expectError(fourth, 422, 'limit_exceeded');
    const listed = await call(sandbox, 'GET', '/v1/webhooks', { key: a.key });
    const [first] = listed.body.data;
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${first.id}`, { key: a.key })).status).toBe(204);
    await createWebhook(sandbox, a.key, { resource: 'l:5', url: `${receiver.url}/limit-ok` });
    // Free the places again for the isolation tests below.
    for (const w of (await call(sandbox, 'GET', '/v1/webhooks', { key: a.key })).body.data) {
      await call(sandbox, 'DELETE', `/v1/webhooks/${w.id}`, { key: a.key });
    }
  });
});

describe('tenant isolation', () => {
  it('hides, protects and never feeds one tenant’s webhooks to another', async () => {
    const hookA = await createWebhook(sandbox, a.key, { resource: 'shared:1', url: `${receiver.url}/iso/a` });
    const hookB = await createWebhook(sandbox, b.key, { resource: 'shared:1', url: `${receiver.url}/iso/b` });

    // B cannot read, change or delete A's webhook: to B it does not exist.
    expectError(await call(sandbox, 'GET', `/v1/webhooks/${hookA.id}`, { key: b.key }), 404, 'not_found');
    expectError(await call(sandbox, 'PATCH', `/v1/webhooks/${hookA.id}`, { key: b.key, body: { status: 'disabled' } }), 404, 'not_found');
    expectError(await call(sandbox, 'DELETE', `/v1/webhooks/${hookA.id}`, { key: b.key }), 404, 'not_found');
    const listB = await call(sandbox, 'GET', '/v1/webhooks', { key: b.key });
    expect(listB.body.data.map((w: { id: string }) => w.id)).toEqual([hookB.id]);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hookA.id}`, { key: a.key })).body.status).toBe('active');

    // The same resource name is a different object per tenant: events stay with their tenant.
    await publish(sandbox, a.key, [{ resource: 'shared:1', type: 'x.y', data: 'from-a' }]);
    await publish(sandbox, b.key, [{ resource: 'shared:1', type: 'x.y', data: 'from-b' }]);
    await receiver.waitFor(() => receiver.events('/iso/a').length === 1 && receiver.events('/iso/b').length === 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(receiver.events('/iso/a').map((e) => e.data)).toEqual(['from-a']);
    expect(receiver.events('/iso/b').map((e) => e.data)).toEqual(['from-b']);
    // Each tenant's object has its own sequence.
    expect(receiver.events('/iso/a')[0]?.seq).toBe(1);
    expect(receiver.events('/iso/b')[0]?.seq).toBe(1);
  });
});

describe('tenant isolation on every webhook route', () => {
  it('answers another tenant’s webhook id with 404 on rotate-secret, attempts, replay, dead letters and as a list cursor, changing nothing', async () => {
    const hookA = await createWebhook(sandbox, a.key, { resource: 'routes:1', url: `${receiver.url}/routes/a` });
    for (const [method, path, body] of [
      ['POST', `/v1/webhooks/${hookA.id}/rotate-secret`, undefined],
      ['GET', `/v1/webhooks/${hookA.id}/attempts`, undefined],
      ['POST', `/v1/webhooks/${hookA.id}/replay`, { since: '2020-01-01T00:00:00Z' }],
      ['GET', `/v1/webhooks/${hookA.id}/dead-letters`, undefined],
      ['POST', `/v1/webhooks/${hookA.id}/dead-letters/replay`, undefined],
    ] as const) {
      const answer = await call(sandbox, method, path, { key: b.key, ...(body && { body }) });
      expectError(answer, 404, 'not_found');
      expect(JSON.stringify(answer.body), path).not.toMatch(/whsec_/);
    }
    // As a cursor it names a place in B's own list only: none of A's webhooks is listed.
    const listed = await call(sandbox, 'GET', `/v1/webhooks?after=${hookA.id}`, { key: b.key });
    expect(listed.status).toBe(200);
    expect(listed.body.data.map((w: { id: string }) => w.id)).not.toContain(hookA.id);
    // A's secret was not rotated: deliveries still verify with the one it was given.
    await publish(sandbox, a.key, [{ resource: 'routes:1', type: 'x.y', data: 1 }]);
    await receiver.waitFor(() => receiver.deliveries('/routes/a').length === 1);
    const { Webhook } = await import('standardwebhooks');
    const [delivery] = receiver.deliveries('/routes/a');
    expect(() => new Webhook(hookA.secret.slice('whsec_'.length)).verify(delivery?.body ?? '', delivery?.headers ?? {})).not.toThrow();
    expect(delivery?.headers['webhook-signature']?.split(' ')).toHaveLength(1);
    await call(sandbox, 'DELETE', `/v1/webhooks/${hookA.id}`, { key: a.key });
  });
});

describe('the authorizer failing (as API Gateway answers it)', () => {
  it('answers 500 internal when the key cannot be looked up, not 401 as if the key were wrong', async () => {
    // A sandbox of its own: its control table is removed under it.
    const broken = await startSandbox({ port: 0, canary: false });
    try {
      const tenant = await createTenant(broken, 'lookup');
      await broken.wiring.dynamo.send(new DeleteTableCommand({ TableName: broken.wiring.controlTable }));
      // In AWS an authorizer that throws anything but 'Unauthorized' is AUTHORIZER_FAILURE:
      // a 500 that API Gateway's 5XXError (the ingest-5xx alarm) counts, never a 401.
      const response = await call(broken, 'GET', '/v1/webhooks', { key: tenant.key });
      expectError(response, 500, 'internal');
    } finally {
      await broken.stop();
    }
  });

  it("counts each failure in the authorizer function's Errors: authorizer-errors fires, as the ingest-5xx runbook says", async () => {
    // Alarm periods shrunk 100×: authorizer-errors' 3 of 5 minutes are 3 of 5 periods of 0.6 s.
    const broken = await startSandbox({ port: 0, canary: false, alarmTimeScale: 0.01 });
    try {
      const tenant = await createTenant(broken, 'lookup');
      await broken.wiring.dynamo.send(new DeleteTableCommand({ TableName: broken.wiring.controlTable }));

      // Every keyed request fails at its key's lookup, for 4 periods.
      for (const started = Date.now(); Date.now() - started < 2_600; ) {
        expectError(await call(broken, 'GET', '/v1/webhooks', { key: tenant.key }), 500, 'internal');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }

      // Assert: the admin key needs no lookup, and on-call sees both alarms the runbook names.
      const alarms = (await call(broken, 'GET', '/v1/admin/alarms', { key: broken.adminKey })).body.data;
      const state = (name: string) => alarms.find((a: { name: string }) => a.name === name)?.state;
      expect(state('ingest-5xx')).toBe('ALARM');
      expect(state('authorizer-errors')).toBe('ALARM');
    } finally {
      await broken.stop();
    }
  });
});
