/**
 * The real API Gateway client against a local HTTP server that answers as API
 * Gateway does when its regional quota of usage plans is reached (there is no
 * API Gateway emulator to run).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { APIGatewayClient } from '@aws-sdk/client-api-gateway';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiGatewayUsagePlans } from '../../functions/adapters/usage-plans.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { ApiError } from '../../functions/core/errors.ts';
import { type LoggerPort, NO_LOGS } from '../../functions/core/telemetry.ts';

let server: http.Server;
let endpoint: string;
const calls: string[] = [];
let usagePlanAnswer: { status: number; type?: string } = { status: 201 };
let stageAttached = true;
let patches: unknown[] = [];
/** How many of the next requests of a kind ('PATCH', 'DELETE') API Gateway throttles. */
const throttleNext: Record<string, number> = {};

beforeAll(async () => {
  server = http.createServer((req, res) => {
    calls.push(`${req.method} ${req.url}`);
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      if (req.method === 'PATCH') patches.push(...(JSON.parse(body) as { patchOperations: unknown[] }).patchOperations);
      const json = (status: number, body: unknown, type?: string) =>
        res.writeHead(status, { 'content-type': 'application/json', ...(type && { 'x-amzn-errortype': type }) }).end(JSON.stringify(body));
      if ((throttleNext[req.method ?? ''] ?? 0) > 0) {
        throttleNext[req.method ?? ''] = (throttleNext[req.method ?? ''] ?? 0) - 1;
        return json(429, { message: 'Too Many Requests' }, 'TooManyRequestsException');
      }
      if (req.method === 'POST' && req.url === '/apikeys') return json(201, { id: 'key123' });
      if (req.method === 'POST' && req.url === '/usageplans') {
        return usagePlanAnswer.type
          ? json(usagePlanAnswer.status, { message: 'Cannot exceed the limit' }, usagePlanAnswer.type)
          : json(201, { id: 'plan123' });
      }
      if (req.method === 'POST' && req.url?.endsWith('/keys')) return json(201, { id: 'key123', type: 'API_KEY' });
      if (req.method === 'PATCH' && req.url === '/usageplans/plan123') {
        stageAttached = false;
        return json(200, { id: 'plan123', apiStages: [] });
      }
      // As API Gateway: a usage plan with an API stage cannot be deleted.
      if (req.method === 'DELETE' && req.url === '/usageplans/plan123' && stageAttached) {
        return json(
          400,
          { message: 'Cannot delete Usage Plan plan123 because there are API Stages associated with it' },
          'BadRequestException',
        );
      }
      if (req.method === 'DELETE') return res.writeHead(202).end();
      json(404, { message: 'no such route' }, 'NotFoundException');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function plans(logger?: LoggerPort) {
  const client = new APIGatewayClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1,
  });
  return new ApiGatewayUsagePlans({ client, restApiId: 'api123', stage: 'live', logger, removeFirstWaitMs: 5 });
}

const tenant = {
  id: 'ten_0000000000000000000',
  name: 'acme',
  limits: { max_webhooks: 100, rate_per_second: buildConfig({}).tenantRatePerSecond, burst: buildConfig({}).tenantBurst },
  usageKey: 'u'.repeat(30),
  createdAt: '',
};

describe('API Gateway usage plans', () => {
  it('creates the key, the plan and the link between them', async () => {
    usagePlanAnswer = { status: 201 };
    calls.length = 0;
    expect(await plans().provision(tenant)).toEqual({ apiKeyId: 'key123', usagePlanId: 'plan123' });
    expect(calls).toEqual(['POST /apikeys', 'POST /usageplans', 'POST /usageplans/plan123/keys']);
  });

  it("answers API Gateway's regional quota as limit_exceeded (422), and deletes the key it made", async () => {
    usagePlanAnswer = { status: 429, type: 'LimitExceededException' };
    calls.length = 0;
    const failed = await plans()
      .provision(tenant)
      .catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ApiError);
    expect(failed).toMatchObject({ code: 'limit_exceeded', status: 422 });
    expect(calls).toEqual(['POST /apikeys', 'POST /usageplans', 'DELETE /apikeys/key123']);
  });

  it('removes a plan as API Gateway allows it: its API stage first, then the plan, and the key in any case', async () => {
    stageAttached = true;
    patches = [];
    calls.length = 0;

    await plans().remove({ apiKeyId: 'key123', usagePlanId: 'plan123' });

    expect(calls).toEqual(['PATCH /usageplans/plan123', 'DELETE /usageplans/plan123', 'DELETE /apikeys/key123']);
    expect(patches).toEqual([{ op: 'remove', path: '/apiStages', value: 'api123:live' }]);
  });

  it('goes on removing while API Gateway throttles it, from the step it reached, and names what it could not remove', async () => {
    stageAttached = true;
    calls.length = 0;
    // The stage comes off; deleting the plan is throttled twice, then goes through.
    throttleNext.DELETE = 2;
    await plans().remove({ apiKeyId: 'key123', usagePlanId: 'plan123' });
    expect(calls.filter((c) => c === 'PATCH /usageplans/plan123')).toHaveLength(1);
    expect(calls.at(-2)).toBe('DELETE /usageplans/plan123');
    expect(calls.at(-1)).toBe('DELETE /apikeys/key123');

    // Throttled every time: the plan is left, and the log says which, for an operator to delete.
    stageAttached = true;
    throttleNext.PATCH = 99;
    const logged: Array<Record<string, unknown> | undefined> = [];
    const logger = { ...NO_LOGS, error: (_: string, fields?: Record<string, unknown>) => void logged.push(fields) };
    await expect(plans(logger).remove({ apiKeyId: 'key123', usagePlanId: 'plan123' })).rejects.toMatchObject({
      name: 'TooManyRequestsException',
    });
    throttleNext.PATCH = 0;
    expect(logged).toEqual([expect.objectContaining({ usagePlanId: 'plan123' })]);
    expect(logged[0]).not.toHaveProperty('apiKeyId');
  });

  it("sets a tenant's throttle on its own usage plan, to the limits it now has", async () => {
    patches = [];
    calls.length = 0;
    const raised = { ...tenant, limits: { ...tenant.limits, rate_per_second: 2_000, burst: 3_000 } };
    await plans().setThrottle({ apiKeyId: 'key123', usagePlanId: 'plan123' }, raised);
    expect(calls).toEqual(['PATCH /usageplans/plan123']);
    expect(patches).toEqual([
      { op: 'replace', path: '/throttle/rateLimit', value: '2000' },
      { op: 'replace', path: '/throttle/burstLimit', value: '3000' },
    ]);
    await expect(plans().setThrottle({}, raised)).rejects.toThrow('has no usage plan on record');
  });

  it("answers API Gateway's throttle on these calls as rate_limited (429) with a Retry-After", async () => {
    usagePlanAnswer = { status: 429, type: 'TooManyRequestsException' };
    const failed = await plans()
      .provision(tenant)
      .catch((error: unknown) => error);
    expect(failed).toMatchObject({ code: 'rate_limited', status: 429, retryAfterSeconds: 2 });
  });
});
