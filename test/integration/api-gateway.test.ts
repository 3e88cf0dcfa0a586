/**
 * The API function as API Gateway invokes it in a deployed stack: REST API proxy
 * events shaped by the synthesized RestApi (its binary media types), the caller in
 * the authorizer's context, answered as the sandbox answers the same request.
 */
import type { Context } from 'aws-lambda';
import { beforeAll, describe, expect, it } from 'vitest';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { QUEUES_VIEW_MARGIN_MS } from '../../functions/app/reconciler.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant } from '../support/api.ts';
import { deployedEnvironment } from '../support/function-env.ts';
import { type Caller, deployedBinaryMediaTypes, type GatewayRequest, gatewayEvent } from '../support/gateway-events.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let tenant: { id: string; key: string };
let binaryMediaTypes: string[];
const context = { functionName: 'api', awsRequestId: 'r', getRemainingTimeInMillis: () => 29_000 } as unknown as Context;

withSandbox({}, async (s) => {
  sandbox = s;
  tenant = await createTenant(sandbox);
});

beforeAll(() => {
  binaryMediaTypes = deployedBinaryMediaTypes();
}, 60_000);

/** The API function's entry file, with the environment the stack gives it, its clients pointed at the sandbox's emulators. */
async function apiHandler() {
  Object.assign(process.env, deployedEnvironment(sandbox, 'live'), { POWERTOOLS_METRICS_DISABLED: 'true' });
  return (await import('../../functions/api/handler.ts')).handler;
}

async function throughGateway(
  request: GatewayRequest,
  caller: Caller,
  invocation: Context = context,
): Promise<{ status: number; body: unknown }> {
  const handler = await apiHandler();
  const result = (await handler(gatewayEvent(request, caller, binaryMediaTypes), invocation)) as { statusCode: number; body: string };
  return { status: result.statusCode, body: result.body ? JSON.parse(result.body) : undefined };
}

/** A JSON body in Windows-1252 (or Latin-1): "café" with é as the one byte 0xE9, which UTF-8 cannot read. */
function latin1(json: string): Uint8Array {
  return Buffer.from(json, 'latin1');
}

describe('the API behind API Gateway', () => {
  it('refuses a body not in UTF-8, as the sandbox does, rather than accept and deliver it with U+FFFD for the bytes API Gateway could not read', async () => {
    const json = JSON.stringify({ events: [{ resource: 'enc:1', type: 'a.b', data: { name: 'café' } }] });
    const headers = [['Content-Type', 'application/json']] as const;

    const sandboxAnswer = await call(sandbox, 'POST', '/v1/events', { key: tenant.key, rawBody: json, contentType: 'application/json' });
    expect(sandboxAnswer.status).toBe(202); // The same JSON in UTF-8 is fine.
    const inSandbox = await fetch(`${sandbox.url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.key}`, 'content-type': 'application/json' },
      body: latin1(json.replace('enc:1', 'enc:2')),
    });
    expect(inSandbox.status).toBe(400);

    const inAws = await throughGateway(
      { method: 'POST', path: '/v1/events', headers, body: latin1(json.replace('enc:1', 'enc:3')) },
      { principal: 'tenant', tenantId: tenant.id },
    );
    expect(inAws).toEqual({ status: 400, body: await inSandbox.json() });
    const queues = new QueueStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.eventsTable, retentionDays: 7 });
    expect(await queues.readMeta({ tenantId: tenant.id, resource: 'enc:3' })).toBeUndefined();
  });

  it('stores a UTF-8 body byte for byte: the event published through API Gateway is the one the sandbox is sent again (duplicate, not a different event)', async () => {
    const event = { resource: 'enc:4', type: 'a.b', data: { name: 'café ☕ \u{1F600}' }, id: 'same-bytes-1' };
    const json = JSON.stringify({ events: [event] });
    const inAws = await throughGateway(
      { method: 'POST', path: '/v1/events', headers: [['Content-Type', 'application/json; charset=utf-8']], body: Buffer.from(json) },
      { principal: 'tenant', tenantId: tenant.id },
    );
    expect(inAws).toMatchObject({ status: 202, body: { events: [{ status: 'accepted' }] } });
    const again = await call(sandbox, 'POST', '/v1/events', { key: tenant.key, rawBody: json });
    expect(again.body.events[0]).toEqual({ id: (inAws.body as { events: Array<{ id: string }> }).events[0]?.id, status: 'duplicate' });
  });

  it('routes a request made through a custom domain whose base path mapping puts the stage under a base path, whose path API Gateway starts with it', async () => {
    const caller = { principal: 'tenant', tenantId: tenant.id } as const;
    const webhooks = await call(sandbox, 'GET', '/v1/webhooks', { key: tenant.key });
    expect(webhooks.status).toBe(200);

    // https://api.example.com/events/v1/webhooks: path "/events/v1/webhooks", proxy "v1/webhooks".
    expect(await throughGateway({ method: 'GET', path: '/v1/webhooks', basePath: 'events' }, caller)).toEqual({
      status: 200,
      body: webhooks.body,
    });
    const health = { method: 'GET', path: '/v1/health', basePath: 'events' } as const;
    expect(await throughGateway(health, caller)).toEqual({ status: 200, body: { status: 'ok' } });
    const unknownWebhook = await throughGateway({ method: 'GET', path: '/v1/webhooks/wh_nope', basePath: 'events' }, caller);
    expect(unknownWebhook).toMatchObject({ status: 404, body: { error: { code: 'not_found', message: 'No webhook has this id.' } } });
  });

  it('reads the deepest queues for the time the invocation has left (Lambda’s remaining time), not past it', async () => {
    expect(
      (await call(sandbox, 'POST', '/v1/events', { key: tenant.key, body: { events: [{ resource: 'view:1', type: 'a.b', data: 1 }] } }))
        .status,
    ).toBe(202);
    const request = { method: 'GET', path: '/v1/admin/queues', query: [['limit', '5']] as const };

    const withTime = await throughGateway(request, { principal: 'admin' });
    // An invocation with no more than the margin the view keeps for its answer reads no page of the index.
    const late = { ...context, getRemainingTimeInMillis: () => QUEUES_VIEW_MARGIN_MS } as Context;
    const outOfTime = await throughGateway(request, { principal: 'admin' }, late);

    expect(withTime).toMatchObject({ status: 200, body: { complete: true } });
    expect(outOfTime).toMatchObject({ status: 200, body: { complete: false, objects_read: 0 } });
  });
});
